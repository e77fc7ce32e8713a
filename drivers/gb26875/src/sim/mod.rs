//! A simulated UITD (用户信息传输装置) for tests and `campusgw demo`.
//!
//! It connects to a centre, uploads scripted frames (fire alarm, fault, reset, heartbeat,
//! UITD status), waits for each confirm and retransmits when none comes or a deny comes
//! (at most [`SimConfig::retries`] times, as GB/T 26875.3 recommends). Its reader task
//! records every frame it receives ([`UitdSim::received`]) and answers the centre: requests
//! (command 4) with a response (5), control (1) with a confirm (3). It can misbehave:
//! corrupt checksums, split frames across writes, put garbage between frames, go silent,
//! stamp zero time labels, and number frames from 1 again after every reconnect.
//!
//! The other side, a simulated city fire-monitoring centre for the transmitting UITD
//! (`crate::transmit`), is [`centre`].
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> std::io::Result<()> {
//! use campusgw_gb26875::sim::{SimConfig, UitdSim};
//! use campusgw_gb26875::codec::ComponentAddress;
//! let sim = UitdSim::connect(addr, SimConfig::new(889, 88888)).await?;
//! let outcome = sim.fire_alarm(ComponentAddress::from_parts(10, 2), "3楼东 烟感").await;
//! assert!(outcome.is_confirmed());
//! # Ok(()) }
//! ```

pub mod centre;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::codec::{
    Address, Adu, CommandByte, ComponentAddress, ComponentStatus, Description, Frame, FrameDecoder,
    SystemRef, SystemStatus, TimeLabel, UitdOperation, UitdStatus, Version,
};

/// How the simulated UITD identifies itself and retransmits.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Its own 48-bit address.
    pub uitd_address: u64,
    /// The centre's address.
    pub centre_address: u64,
    /// How long to wait for a confirm before retransmitting.
    pub confirm_timeout: Duration,
    /// Retransmissions after the first attempt.
    pub retries: u8,
    /// After confirming a duty check (type 91), upload "duty check answered" (type 24).
    pub answer_duty_checks: bool,
}

impl SimConfig {
    /// Addresses as given; 10 s confirm timeout, 3 retries, duty checks not answered.
    pub fn new(uitd_address: u64, centre_address: u64) -> SimConfig {
        SimConfig {
            uitd_address,
            centre_address,
            confirm_timeout: Duration::from_secs(10),
            retries: 3,
            answer_duty_checks: false,
        }
    }
}

/// Ways to misbehave, applied to every frame the simulator writes from now on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Flip the checksum of each upload.
    pub corrupt_checksum: bool,
    /// Write each frame in chunks of this many bytes.
    pub split_writes: Option<usize>,
    /// Write garbage bytes before each frame.
    pub garbage_between: bool,
    /// Answer nothing the centre sends (requests and control).
    pub silent: bool,
    /// Stamp every frame and object with an all-zero time label (a UITD whose clock was
    /// never set after a power loss).
    pub zero_clock: bool,
    /// Number frames from 1 again after every [`UitdSim::reconnect`], as many UITDs do after
    /// a reconnect or reboot.
    pub restart_serial_on_reconnect: bool,
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Confirmed (command 3) after this many attempts.
    Confirmed {
        /// Attempts written, first included.
        attempts: u8,
    },
    /// Every attempt was denied (command 6).
    Denied {
        /// Attempts written.
        attempts: u8,
    },
    /// No answer to any attempt.
    NoAnswer {
        /// Attempts written.
        attempts: u8,
    },
    /// The centre closed the connection.
    Closed,
}

impl Delivery {
    /// Whether the centre confirmed.
    pub fn is_confirmed(self) -> bool {
        matches!(self, Delivery::Confirmed { .. })
    }
}

struct Inner {
    config: SimConfig,
    uitd: Address,
    centre: Address,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    received: Mutex<Vec<Frame>>,
    changed: Notify,
    serial: AtomicU16,
    writes: AtomicUsize,
    status: AtomicU8,
    closed: AtomicBool,
    misbehaviour: Mutex<Misbehaviour>,
}

/// A connected, simulated UITD. Dropping it closes the connection.
pub struct UitdSim {
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
}

impl Drop for UitdSim {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// GB/T 26875.3-2011 component status bit 1: fire (PROTOCOLS §1.2).
const STATUS_FIRE: u16 = 1 << 1;
/// Component status bit 2: fault.
const STATUS_FAULT: u16 = 1 << 2;
/// Component status bit 0: normal operation.
const STATUS_NORMAL: u16 = 1;

impl UitdSim {
    /// Connects to the centre at `addr`.
    ///
    /// # Errors
    /// The connect error; or `InvalidInput` for an address over 48 bits.
    pub async fn connect(addr: SocketAddr, config: SimConfig) -> std::io::Result<UitdSim> {
        let bad =
            || std::io::Error::new(std::io::ErrorKind::InvalidInput, "address exceeds 48 bits");
        let uitd = Address::new(config.uitd_address).ok_or_else(bad)?;
        let centre = Address::new(config.centre_address).ok_or_else(bad)?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let inner = Arc::new(Inner {
            config,
            uitd,
            centre,
            writer: tokio::sync::Mutex::new(wr),
            received: Mutex::new(Vec::new()),
            changed: Notify::new(),
            serial: AtomicU16::new(0),
            writes: AtomicUsize::new(0),
            status: AtomicU8::new(0x01),
            closed: AtomicBool::new(false),
            misbehaviour: Mutex::new(Misbehaviour::default()),
        });
        let reader = tokio::spawn(read_loop(inner.clone(), rd));
        Ok(UitdSim { inner, reader })
    }

    /// Connects again to the centre at `addr` (after it went away), keeping the
    /// configuration, the serial counter (unless
    /// [`Misbehaviour::restart_serial_on_reconnect`]), the UITD status and the misbehaviour:
    /// a frame built before can be retransmitted with [`UitdSim::upload_frame`] (or
    /// renumbered first with [`UitdSim::renumbered`]). Frames received on the old connection
    /// are forgotten.
    ///
    /// # Errors
    /// The connect error; the old connection is then kept as it was.
    pub async fn reconnect(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let fresh = UitdSim::connect(addr, self.inner.config.clone()).await?;
        let m = self.inner.misbehaviour.lock().expect("sim lock").clone();
        if !m.restart_serial_on_reconnect {
            let serial = self.inner.serial.load(Ordering::Relaxed);
            fresh.inner.serial.store(serial, Ordering::Relaxed);
        }
        let status = self.inner.status.load(Ordering::Relaxed);
        fresh.inner.status.store(status, Ordering::Relaxed);
        fresh.set_misbehaviour(m);
        // Dropping the old simulator aborts its reader and closes its socket.
        *self = fresh;
        Ok(())
    }

    /// Forgets the frames received so far, so that long runs (benchmarks) do not make
    /// every wait scan and copy an ever-growing list. Call it only between uploads: an
    /// upload in flight looks for its answer past the frames it had already seen.
    pub fn clear_received(&self) {
        self.inner.received.lock().expect("sim lock").clear();
    }

    /// Sets how to misbehave from now on.
    pub fn set_misbehaviour(&self, m: Misbehaviour) {
        *self.inner.misbehaviour.lock().expect("sim lock") = m;
    }

    /// Uploads a smoke-detector fire alarm (type 2, status fire) for `component`.
    pub async fn fire_alarm(&self, component: ComponentAddress, description: &str) -> Delivery {
        let time = self.inner.clock();
        self.upload(Some(component_status(
            component,
            STATUS_FIRE,
            description,
            time,
        )))
        .await
    }

    /// Uploads a component fault (type 2, status fault).
    pub async fn fault(&self, component: ComponentAddress, description: &str) -> Delivery {
        let time = self.inner.clock();
        self.upload(Some(component_status(
            component,
            STATUS_FAULT,
            description,
            time,
        )))
        .await
    }

    /// Uploads a component back to normal (type 2, status normal), which the centre reads
    /// as a reset.
    pub async fn reset(&self, component: ComponentAddress) -> Delivery {
        let time = self.inner.clock();
        self.upload(Some(component_status(component, STATUS_NORMAL, "", time)))
            .await
    }

    /// Uploads the UITD's own status (type 21), and keeps it for later status reads.
    pub async fn uitd_status(&self, status: u8) -> Delivery {
        self.inner.status.store(status, Ordering::Relaxed);
        self.upload(Some(Adu::UitdStatus(vec![UitdStatus {
            status,
            time: self.inner.clock(),
        }])))
        .await
    }

    /// Sends a heartbeat (empty command 2).
    pub async fn heartbeat(&self) -> Delivery {
        self.upload(None).await
    }

    /// Uploads `adu` (or an empty ADU) with a fresh serial number.
    pub async fn upload(&self, adu: Option<Adu>) -> Delivery {
        let frame = self.frame(adu);
        self.upload_frame(&frame).await
    }

    /// A command-2 frame from this UITD with a fresh serial number, not sent yet.
    pub fn frame(&self, adu: Option<Adu>) -> Frame {
        let serial = self
            .inner
            .serial
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let data = adu.and_then(|a| a.encode().ok()).unwrap_or_default();
        Frame {
            serial,
            version: Version::V1_1,
            time: self.inner.clock(),
            source: self.inner.uitd,
            destination: self.inner.centre,
            command: CommandByte::SendData,
            data,
        }
    }

    /// `frame`'s content under a fresh serial and frame time label: how a UITD retransmits
    /// an unconfirmed upload after a reconnect.
    pub fn renumbered(&self, frame: &Frame) -> Frame {
        let serial = self
            .inner
            .serial
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        Frame {
            serial,
            time: self.inner.clock(),
            ..frame.clone()
        }
    }

    /// Sends `frame` as is (same serial on every call) and retransmits it until confirmed
    /// or out of retries.
    pub async fn upload_frame(&self, frame: &Frame) -> Delivery {
        let mut last = Delivery::NoAnswer { attempts: 0 };
        for attempt in 1..=self.inner.config.retries.saturating_add(1) {
            let seen = self.received().len();
            if self.inner.write_frame(frame, true).await.is_err() {
                return Delivery::Closed;
            }
            let timeout = self.inner.config.confirm_timeout;
            let answer = self
                .wait_from(seen, timeout, |f| {
                    f.serial == frame.serial
                        && matches!(f.command, CommandByte::Confirm | CommandByte::Deny)
                })
                .await;
            last = match answer {
                Some(f) if f.command == CommandByte::Confirm => {
                    return Delivery::Confirmed { attempts: attempt };
                }
                Some(_) => Delivery::Denied { attempts: attempt },
                None if self.is_closed() => return Delivery::Closed,
                None => Delivery::NoAnswer { attempts: attempt },
            };
        }
        last
    }

    /// Writes raw bytes (garbage, hand-made frames), bypassing every misbehaviour.
    ///
    /// # Errors
    /// The write error.
    pub async fn send_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.writer.lock().await.write_all(bytes).await
    }

    /// Every frame received from the centre so far (confirms, denies, requests, control).
    pub fn received(&self) -> Vec<Frame> {
        self.inner.received.lock().expect("sim lock").clone()
    }

    /// Frames written so far (uploads with their retransmissions, answers, raw writes).
    pub fn writes(&self) -> usize {
        self.inner.writes.load(Ordering::Relaxed)
    }

    /// Whether the centre closed the connection.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for a received frame matching `pred` (already received ones
    /// count).
    pub async fn wait_received(
        &self,
        timeout: Duration,
        pred: impl Fn(&Frame) -> bool,
    ) -> Option<Frame> {
        self.wait_from(0, timeout, pred).await
    }

    /// Waits up to `timeout` for the centre to close the connection.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            if self.is_closed() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_closed();
            }
        }
    }

    async fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Frame) -> bool,
    ) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            let found = self.received().into_iter().skip(from).find(|f| pred(f));
            if found.is_some() {
                return found;
            }
            if self.is_closed() || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl Inner {
    /// The time label this UITD stamps now: its clock, or zeros when it has none.
    fn clock(&self) -> TimeLabel {
        if self.misbehaviour.lock().expect("sim lock").zero_clock {
            TimeLabel::default()
        } else {
            now()
        }
    }

    /// Writes a frame, applying the misbehaviour (`upload` = subject to checksum corruption).
    async fn write_frame(&self, frame: &Frame, upload: bool) -> std::io::Result<()> {
        let m = self.misbehaviour.lock().expect("sim lock").clone();
        let mut bytes = frame
            .encode()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        if upload && m.corrupt_checksum {
            let at = bytes.len() - 3;
            bytes[at] ^= 0xFF;
        }
        if m.garbage_between {
            let mut g = b"\x00\x17noise#@\xFF".to_vec();
            g.extend_from_slice(&bytes);
            bytes = g;
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut w = self.writer.lock().await;
        match m.split_writes {
            Some(n) => {
                for chunk in bytes.chunks(n.max(1)) {
                    w.write_all(chunk).await?;
                    w.flush().await?;
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
            None => w.write_all(&bytes).await,
        }
    }

    /// The answer to a centre-initiated frame, if any.
    fn answer(&self, f: &Frame) -> Option<Frame> {
        let adu = f.adu().ok().flatten();
        let time = self.clock();
        let (command, adu) = match (f.command, adu) {
            (CommandByte::Control, _) => (CommandByte::Confirm, None),
            (CommandByte::Request, Some(Adu::ReadUitdStatus(_))) => {
                let status = self.status.load(Ordering::Relaxed);
                (
                    CommandByte::Response,
                    Some(Adu::UitdStatus(vec![UitdStatus { status, time }])),
                )
            }
            (CommandByte::Request, Some(Adu::ReadSystemStatus(s))) => {
                let objs = s
                    .into_iter()
                    .map(|system| SystemStatus {
                        system,
                        status: 0x0001,
                        time,
                    })
                    .collect();
                (CommandByte::Response, Some(Adu::SystemStatus(objs)))
            }
            (CommandByte::Request, Some(Adu::ReadComponentStatus(c))) => {
                let objs = c
                    .into_iter()
                    .map(|c| ComponentStatus {
                        system: c.system,
                        component_type: 40,
                        component_address: c.component_address,
                        status: STATUS_NORMAL,
                        description: Description::new(""),
                        time,
                    })
                    .collect();
                (CommandByte::Response, Some(Adu::ComponentStatus(objs)))
            }
            (CommandByte::Request, Some(Adu::ReadUitdVersion(_))) => {
                (CommandByte::Response, Some(Adu::UitdVersion(vec![(1, 1)])))
            }
            (CommandByte::Request, Some(Adu::ReadUitdTime(_))) => {
                (CommandByte::Response, Some(Adu::UitdTime(vec![time])))
            }
            (CommandByte::Request, _) => (CommandByte::Deny, None),
            _ => return None,
        };
        let mut reply = f.reply(command, time);
        reply.data = adu.and_then(|a| a.encode().ok()).unwrap_or_default();
        Some(reply)
    }
}

async fn read_loop(inner: Arc<Inner>, mut rd: OwnedReadHalf) {
    let mut buf = BytesMut::with_capacity(2048);
    let mut decoder = FrameDecoder::new();
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Some(item) = decoder.next_item(&mut buf) {
            let Ok(frame) = item else { continue };
            inner.received.lock().expect("sim lock").push(frame.clone());
            inner.changed.notify_waiters();
            on_centre_frame(&inner, &frame).await;
        }
    }
    inner.closed.store(true, Ordering::Relaxed);
    inner.changed.notify_waiters();
}

async fn on_centre_frame(inner: &Arc<Inner>, frame: &Frame) {
    if inner.misbehaviour.lock().expect("sim lock").silent {
        return;
    }
    if let Some(reply) = inner.answer(frame) {
        let _ = inner.write_frame(&reply, false).await;
    }
    let duty_check = matches!(frame.adu(), Ok(Some(Adu::DutyCheck(_))));
    if duty_check && inner.config.answer_duty_checks {
        let serial = inner.serial.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let op = Adu::UitdOperation(vec![UitdOperation {
            flags: 1 << 5,
            operator: 1,
            time: inner.clock(),
        }]);
        let upload = Frame {
            serial,
            version: Version::V1_1,
            time: inner.clock(),
            source: inner.uitd,
            destination: inner.centre,
            command: CommandByte::SendData,
            data: op.encode().unwrap_or_default(),
        };
        let _ = inner.write_frame(&upload, true).await;
    }
}

fn component_status(
    component: ComponentAddress,
    status: u16,
    description: &str,
    time: TimeLabel,
) -> Adu {
    Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: component,
        status,
        description: Description::new(description),
        time,
    }])
}

fn now() -> TimeLabel {
    TimeLabel::from_utc(Utc::now())
}

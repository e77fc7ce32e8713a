//! A simulated city fire-monitoring centre (城市消防远程监控中心) for the transmitting side
//! (`crate::transmit`, the gateway's `kind = "gb26875"` uplink) in tests and `campusgw demo`.
//!
//! It accepts TCP connections from UITDs, records every frame (decoded, with its raw
//! bytes and the connection it came on) and answers uploads (command 2) as its
//! [`CentreMode`] says: confirm (3), deny (6), nothing (silent) or by closing the
//! connection; its answers can be garbled ([`Mangle`]: half frames, garbage before them,
//! a broken checksum), and [`CentreSim::send_raw`] writes anything. It sends control and requests to the newest connection: 查岗
//! ([`CentreSim::duty_check`]), clock sync ([`CentreSim::sync_clock`]), any read
//! ([`CentreSim::request`]); the UITD's confirms and responses are recorded like the rest.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use campusgw_gb26875::sim::centre::{CentreConfig, CentreSim};
//! let centre = CentreSim::bind("127.0.0.1:0".parse().unwrap(), CentreConfig::new(88888, 889)).await?;
//! println!("centre at {}", centre.local_addr());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::codec::{Adu, CommandByte, Frame, FrameDecoder, TimeLabel, Version};
use crate::transmit::{Identity, centre_frame};

/// How the centre answers uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CentreMode {
    /// Confirm every upload (command 3).
    Confirm,
    /// Deny every upload (command 6).
    Deny,
    /// Answer nothing (frames are still recorded).
    Silent,
    /// Close the connection on the next upload (after recording it).
    Drop,
}

/// How the centre garbles the answers it writes (applied to every answer from now on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mangle {
    /// Write each answer in pieces of this many bytes, flushed apart (half frames).
    pub split: Option<usize>,
    /// Write garbage bytes before each answer.
    pub garbage_before: bool,
    /// Flip the checksum of each answer (the UITD must deny it and wait on).
    pub corrupt_checksum: bool,
}

/// The centre's and the expected UITD's addresses.
#[derive(Debug, Clone, Copy)]
pub struct CentreConfig {
    /// The centre's own address (source of its frames).
    pub centre_address: u64,
    /// The UITD its control and requests go to.
    pub uitd_address: u64,
}

impl CentreConfig {
    /// Both addresses.
    pub fn new(centre_address: u64, uitd_address: u64) -> CentreConfig {
        CentreConfig {
            centre_address,
            uitd_address,
        }
    }
}

/// One frame the centre received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (0 = the first accepted).
    pub connection: usize,
    /// The bytes as on the wire.
    pub bytes: Vec<u8>,
    /// Decoded.
    pub frame: Frame,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

impl Received {
    /// An upload with data (not a heartbeat).
    pub fn is_upload(&self) -> bool {
        self.frame.command == CommandByte::SendData && !self.frame.data.is_empty()
    }
}

struct Inner {
    id: Identity,
    mode: Mutex<CentreMode>,
    mangle: Mutex<Mangle>,
    received: Mutex<Vec<Received>>,
    changed: Notify,
    writers: Mutex<Vec<Arc<tokio::sync::Mutex<OwnedWriteHalf>>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    connections: AtomicUsize,
    serial: AtomicU16,
}

/// A running centre; dropping it stops it and closes every connection.
pub struct CentreSim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Drop for CentreSim {
    fn drop(&mut self) {
        self.acceptor.abort();
        for r in self.inner.readers.lock().expect("sim lock").drain(..) {
            r.abort();
        }
    }
}

fn address(v: u64) -> std::io::Result<crate::codec::Address> {
    crate::codec::Address::new(v).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "address exceeds 48 bits")
    })
}

impl CentreSim {
    /// Listens on `addr` (port 0 for an ephemeral one), confirming uploads.
    ///
    /// # Errors
    /// The bind error, or `InvalidInput` for an address over 48 bits.
    pub async fn bind(addr: SocketAddr, config: CentreConfig) -> std::io::Result<CentreSim> {
        let id = Identity {
            uitd: address(config.uitd_address)?,
            centre: address(config.centre_address)?,
            version: Version::V1_1,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            id,
            mode: Mutex::new(CentreMode::Confirm),
            mangle: Mutex::new(Mangle::default()),
            received: Mutex::new(Vec::new()),
            changed: Notify::new(),
            writers: Mutex::new(Vec::new()),
            readers: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            serial: AtomicU16::new(0),
        });
        let acceptor = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(CentreSim {
            inner,
            addr,
            acceptor,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How to answer uploads from now on.
    pub fn set_mode(&self, mode: CentreMode) {
        *self.inner.mode.lock().expect("sim lock") = mode;
    }

    /// Waits until `n` connections were accepted, or `timeout`; whether they were.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |_| self.connections() >= n).await
    }

    /// How to garble answers from now on.
    pub fn set_mangle(&self, m: Mangle) {
        *self.inner.mangle.lock().expect("sim lock") = m;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Every frame received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("sim lock").clone()
    }

    /// The uploads with data received so far (heartbeats left out).
    pub fn uploads(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::is_upload)
            .collect()
    }

    /// Waits until `done` holds for the frames received, or `timeout`; whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.inner.received.lock().expect("sim lock")) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Closes every open connection (the UITD sees EOF).
    pub async fn drop_connections(&self) {
        let writers: Vec<_> = self
            .inner
            .writers
            .lock()
            .expect("sim lock")
            .drain(..)
            .collect();
        for w in writers {
            let _ = w.lock().await.shutdown().await;
        }
        for r in self.inner.readers.lock().expect("sim lock").drain(..) {
            r.abort();
        }
    }

    /// Sends 查岗 (control, type 91) with `minutes` to answer in the reserved byte, as the
    /// vendor units of the reference vectors do; returns its serial.
    ///
    /// # Errors
    /// No connection, or the write error.
    pub async fn duty_check(&self, minutes: u8) -> std::io::Result<u16> {
        self.send(CommandByte::Control, &Adu::DutyCheck(vec![minutes]))
            .await
    }

    /// Sends a clock sync (control, type 90) to `time`; returns its serial.
    ///
    /// # Errors
    /// No connection, or the write error.
    pub async fn sync_clock(&self, time: TimeLabel) -> std::io::Result<u16> {
        self.send(CommandByte::Control, &Adu::SyncUitdClock(vec![time]))
            .await
    }

    /// Sends a read (request, command 4) such as `Adu::ReadUitdStatus(vec![0])`; returns
    /// its serial.
    ///
    /// # Errors
    /// No connection, or the write error.
    pub async fn request(&self, adu: &Adu) -> std::io::Result<u16> {
        self.send(CommandByte::Request, adu).await
    }

    /// Writes raw bytes (garbage, a broken frame) to the newest connection.
    ///
    /// # Errors
    /// No connection, or the write error.
    pub async fn send_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let w = self.inner.writers.lock().expect("sim lock").last().cloned();
        let w = w.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "no UITD connected")
        })?;
        w.lock().await.write_all(bytes).await
    }

    async fn send(&self, command: CommandByte, adu: &Adu) -> std::io::Result<u16> {
        let serial = self
            .inner
            .serial
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let frame = centre_frame(
            self.inner.id,
            serial,
            command,
            adu,
            TimeLabel::from_utc(Utc::now()),
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let bytes = frame
            .encode()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.send_raw(&bytes).await?;
        Ok(serial)
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        inner.writers.lock().expect("sim lock").push(wr.clone());
        let connection = inner.connections.fetch_add(1, Ordering::Relaxed);
        let reader = tokio::spawn(serve(rd, wr, connection, inner.clone()));
        {
            let mut readers = inner.readers.lock().expect("sim lock");
            readers.retain(|r| !r.is_finished());
            readers.push(reader);
        }
        inner.changed.notify_waiters();
    }
}

async fn serve(
    mut rd: OwnedReadHalf,
    wr: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    connection: usize,
    inner: Arc<Inner>,
) {
    let mut buf = BytesMut::with_capacity(2048);
    let mut decoder = FrameDecoder::new();
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while !buf.is_empty() {
            let before = buf.clone();
            let Some(item) = decoder.next_item(&mut buf) else {
                break;
            };
            let Ok(frame) = item else { continue };
            // The frame is the last bytes the decoder consumed (garbage before it skipped).
            let end = before.len() - buf.len();
            let start = end.saturating_sub(crate::codec::OVERHEAD + frame.data.len());
            let bytes = before
                .get(start..end)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let answer = on_frame(&inner, connection, bytes, &frame);
            match answer {
                Answer::Reply(r) => {
                    if let Ok(b) = r.encode() {
                        let m = *inner.mangle.lock().expect("sim lock");
                        let _ = write_mangled(&wr, &b, m).await;
                    }
                }
                Answer::Close => {
                    let _ = wr.lock().await.shutdown().await;
                    inner.changed.notify_waiters();
                    return;
                }
                Answer::Nothing => {}
            }
        }
    }
    inner.changed.notify_waiters();
}

async fn write_mangled(
    wr: &tokio::sync::Mutex<OwnedWriteHalf>,
    bytes: &[u8],
    m: Mangle,
) -> std::io::Result<()> {
    let mut b = bytes.to_vec();
    if m.corrupt_checksum && b.len() >= 3 {
        let at = b.len() - 3;
        b[at] ^= 0xFF;
    }
    let mut w = wr.lock().await;
    if m.garbage_before {
        w.write_all(b"\x00@#garbage\xFF").await?;
    }
    match m.split {
        Some(n) if n > 0 => {
            for piece in b.chunks(n) {
                w.write_all(piece).await?;
                w.flush().await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        }
        _ => w.write_all(&b).await,
    }
}

enum Answer {
    Reply(Frame),
    Close,
    Nothing,
}

fn on_frame(inner: &Inner, connection: usize, bytes: Vec<u8>, frame: &Frame) -> Answer {
    inner.received.lock().expect("sim lock").push(Received {
        connection,
        bytes,
        frame: frame.clone(),
        at: tokio::time::Instant::now(),
    });
    inner.changed.notify_waiters();
    if frame.command != CommandByte::SendData {
        // Confirms and responses to the centre's own control and requests.
        return Answer::Nothing;
    }
    let now = TimeLabel::from_utc(Utc::now());
    let mode = *inner.mode.lock().expect("sim lock");
    match mode {
        // Heartbeats are confirmed in every mode but silence, so a link stays up while
        // its uploads are denied.
        _ if frame.data.is_empty() && mode != CentreMode::Silent => {
            Answer::Reply(frame.reply(CommandByte::Confirm, now))
        }
        CentreMode::Confirm => Answer::Reply(frame.reply(CommandByte::Confirm, now)),
        CentreMode::Deny => Answer::Reply(frame.reply(CommandByte::Deny, now)),
        CentreMode::Silent => Answer::Nothing,
        CentreMode::Drop => Answer::Close,
    }
}

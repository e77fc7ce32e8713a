//! One UITD connection: read frames, journal then confirm uploads, deny bad frames,
//! send commands and match their answers by serial number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::commands::{Answer, Outgoing};
use super::observe::{self, LogLimiter};
use super::{OpenGuard, Shared};
use crate::codec::{
    Address, Adu, CommandByte, Frame, FrameDecoder, FrameError, TimeLabel, Version,
};
use crate::config::UnknownUitdPolicy;
use crate::mapping::{self, UITD_ABNORMAL_MASK, UitdProfile};

/// A command sent and not yet answered.
struct Pending {
    bytes: Vec<u8>,
    retries_left: u8,
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// Why a connection ends.
enum Close {
    Eof,
    Silent,
    Unidentified,
    Refused,
    PeerRefused,
    WriteTimeout,
    Shutdown,
    Io(std::io::Error),
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    conn: u64,
    writer: OwnedWriteHalf,
    uitd: Option<(Address, UitdProfile)>,
    version: Version,
    uitd_abnormal: bool,
    /// Part of the keys of frames whose content alone cannot identify them.
    link: mapping::LinkId,
    next_serial: u16,
    pending: HashMap<u16, Pending>,
    outbox_tx: mpsc::Sender<Outgoing>,
    limit: LogLimiter,
    /// Reset by each valid frame of this connection's UITD only.
    silent_at: Instant,
    denies: DenyBudget,
}

/// At most `per_second` denies in any one-second window; the rest are dropped.
struct DenyBudget {
    per_second: u32,
    window_start: Instant,
    sent: u32,
}

impl DenyBudget {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.sent = 0;
        }
        if self.sent < self.per_second {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

/// Serves one connection until EOF, silence, refusal or shutdown.
pub(crate) async fn serve(guard: OpenGuard, stream: TcpStream, peer: SocketAddr, conn: u64) {
    let shared = guard.shared().clone();
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (outbox_tx, mut outbox) = mpsc::channel(16);
    let mut s = Session {
        shared: shared.clone(),
        peer,
        conn,
        writer,
        uitd: None,
        version: Version::V1_1,
        uitd_abnormal: false,
        link: mapping::LinkId::random(),
        next_serial: 0,
        pending: HashMap::new(),
        outbox_tx,
        limit: LogLimiter::new(Duration::from_secs(10)),
        silent_at: Instant::now() + shared.heartbeat_timeout,
        denies: DenyBudget {
            per_second: shared.max_denies_per_second,
            window_start: Instant::now(),
            sent: 0,
        },
    };
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = FrameDecoder::new();
    // Until its first valid frame a connection is nobody's: it gets identify_timeout.
    let identify_by = Instant::now() + shared.identify_timeout;
    let why = loop {
        let retry_at = s.pending.values().map(|p| p.deadline).min();
        let identified = s.uitd.is_some();
        let deadline = if identified { s.silent_at } else { identify_by };
        let step = tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => Err(Close::Eof),
                Ok(_) => s.drain(&mut decoder, &mut buf).await,
                Err(e) => Err(Close::Io(e)),
            },
            Some(out) = outbox.recv() => s.send_command(out).await,
            () = sleep_until(retry_at.unwrap_or(deadline)), if retry_at.is_some() => s.retry_due().await,
            () = sleep_until(deadline) => Err(if identified { Close::Silent } else { Close::Unidentified }),
            () = shared.cx.shutdown().cancelled() => Err(Close::Shutdown),
        };
        if let Err(why) = step {
            break why;
        }
        if buf.capacity() > 64 * 1024 && buf.is_empty() {
            buf = BytesMut::with_capacity(4096);
        }
    };
    s.close(why);
    drop(guard);
}

impl Session {
    async fn drain(&mut self, decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Result<(), Close> {
        while let Some(item) = decoder.next_item(buf) {
            match item {
                Ok(frame) => self.on_frame(frame).await?,
                Err(e) => self.on_rejected(&e).await?,
            }
        }
        Ok(())
    }

    async fn on_rejected(&mut self, e: &FrameError) -> Result<(), Close> {
        // A deny only for a frame that was plausibly one (start, length in bounds and end
        // marker found): garbage bytes get none, so they cannot be amplified.
        let plausible = matches!(
            e,
            FrameError::BadChecksum { .. } | FrameError::UnknownCommand { .. }
        );
        let Some(h) = e.header().filter(|_| plausible) else {
            observe::frame_rejected(self.peer, e, false, &mut self.limit);
            return Ok(());
        };
        if !self.denies.allow() {
            observe::frame_rejected(self.peer, e, false, &mut self.limit);
            observe::deny_dropped();
            return Ok(());
        }
        observe::frame_rejected(self.peer, e, true, &mut self.limit);
        let mut deny = Frame::deny_for(h, now());
        deny.source = self.shared.centre;
        if let Some((addr, _)) = &self.uitd {
            deny.destination = *addr;
        }
        self.write(&deny).await
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Close> {
        observe::frame_received(frame.command.as_u8());
        let uitd = self.identify(&frame)?;
        if frame.source != uitd {
            observe::foreign_source(self.peer, uitd, frame.source, &mut self.limit);
            if !self.denies.allow() {
                observe::deny_dropped();
                return Ok(());
            }
            return self.write(&frame.reply(CommandByte::Deny, now())).await;
        }
        self.version = frame.version;
        self.silent_at = Instant::now() + self.shared.heartbeat_timeout;
        self.shared.saw(uitd);
        match frame.command {
            CommandByte::SendData => self.on_upload(frame).await,
            CommandByte::Confirm | CommandByte::Response | CommandByte::Deny => {
                self.on_answer(frame);
                Ok(())
            }
            CommandByte::Control | CommandByte::Request | CommandByte::UserDefined(_) => {
                observe::unexpected(self.peer, frame.serial, frame.command.as_u8());
                Ok(())
            }
        }
    }

    /// The UITD this connection belongs to, set by its first valid frame.
    fn identify(&mut self, frame: &Frame) -> Result<Address, Close> {
        if let Some((addr, _)) = &self.uitd {
            return Ok(*addr);
        }
        let addr = frame.source;
        if !self.shared.peer_allowed(addr, self.peer.ip()) {
            observe::peer_refused(self.peer, addr);
            return Err(Close::PeerRefused);
        }
        let profile = match self.shared.profiles.get(&addr) {
            Some(p) => p.clone(),
            None if self.shared.unknown == UnknownUitdPolicy::Accept => {
                observe::unknown_uitd(self.peer, addr, true);
                UitdProfile::default()
            }
            None => {
                observe::unknown_uitd(self.peer, addr, false);
                return Err(Close::Refused);
            }
        };
        self.shared
            .register(addr, self.conn, self.outbox_tx.clone());
        self.uitd = Some((addr, profile));
        Ok(addr)
    }

    async fn on_upload(&mut self, frame: Frame) -> Result<(), Close> {
        let adu = match frame.adu() {
            Ok(Some(adu)) => adu,
            Ok(None) => return self.write(&frame.reply(CommandByte::Confirm, now())).await,
            Err(e) => {
                observe::adu_rejected(self.peer, frame.serial, &e, &mut self.limit);
                return self.write(&frame.reply(CommandByte::Deny, now())).await;
            }
        };
        let profile = self
            .uitd
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        let events = mapping::events_for(&frame, &adu, &profile, self.uitd_abnormal, self.link);
        match self.shared.cx.emit_all(events).await {
            Ok(receipts) => {
                let dups = receipts.iter().filter(|r| r.duplicate).count();
                observe::events_journaled(frame.source, frame.serial, receipts.len() - dups, dups);
            }
            Err(e) => {
                observe::confirm_withheld(frame.source, frame.serial, &e);
                return Ok(());
            }
        }
        if let Adu::UitdStatus(objs) = &adu
            && let Some(last) = objs.last()
        {
            self.uitd_abnormal = last.status & UITD_ABNORMAL_MASK != 0;
        }
        self.write(&frame.reply(CommandByte::Confirm, now())).await
    }

    fn on_answer(&mut self, frame: Frame) {
        match self.pending.remove(&frame.serial) {
            Some(p) => {
                let _ = p.reply.send(Answer::Frame(frame));
            }
            None => observe::unexpected(self.peer, frame.serial, frame.command.as_u8()),
        }
    }

    async fn send_command(&mut self, out: Outgoing) -> Result<(), Close> {
        let Some((uitd, _)) = &self.uitd else {
            let _ = out.reply.send(Answer::NotConnected);
            return Ok(());
        };
        self.next_serial = self.next_serial.wrapping_add(1);
        let frame = Frame {
            serial: self.next_serial,
            version: self.version,
            time: now(),
            source: self.shared.centre,
            destination: *uitd,
            command: out.command,
            data: out.data,
        };
        let bytes = match frame.encode() {
            Ok(b) => b,
            Err(e) => {
                let _ = out.reply.send(Answer::Invalid(e.to_string()));
                return Ok(());
            }
        };
        self.write_bytes(&bytes).await?;
        self.pending.insert(
            frame.serial,
            Pending {
                bytes,
                retries_left: self.shared.retries,
                deadline: Instant::now() + self.shared.response_timeout,
                reply: out.reply,
            },
        );
        Ok(())
    }

    /// Retransmits (GB/T 26875.3-2011 §6.5, PROTOCOLS §1) or gives up on overdue commands.
    async fn retry_due(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let due: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for serial in due {
            let Some(mut p) = self.pending.remove(&serial) else {
                continue;
            };
            if p.reply.is_closed() {
                continue;
            }
            if p.retries_left == 0 {
                let _ = p.reply.send(Answer::Timeout);
                continue;
            }
            p.retries_left -= 1;
            p.deadline = now + self.shared.response_timeout;
            self.write_bytes(&p.bytes).await?;
            self.pending.insert(serial, p);
        }
        Ok(())
    }

    async fn write(&mut self, frame: &Frame) -> Result<(), Close> {
        match frame.encode() {
            Ok(bytes) => self.write_bytes(&bytes).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a reply; this is a bug");
                Ok(())
            }
        }
    }

    async fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Close> {
        // A peer that never reads must not hold this task (and its commands) forever.
        match tokio::time::timeout(self.shared.write_timeout, self.writer.write_all(bytes)).await {
            Ok(r) => r.map_err(Close::Io),
            Err(_) => Err(Close::WriteTimeout),
        }
    }

    fn close(mut self, why: Close) {
        let why = match why {
            Close::Eof => "eof".to_owned(),
            Close::Silent => "silent past heartbeat_timeout".to_owned(),
            Close::Unidentified => "no valid frame within identify_timeout".to_owned(),
            Close::Refused => "unknown uitd refused".to_owned(),
            Close::PeerRefused => "peer not in the uitd's peers list".to_owned(),
            Close::WriteTimeout => "peer did not read within write_timeout".to_owned(),
            Close::Shutdown => "shutdown".to_owned(),
            Close::Io(e) => format!("i/o error: {e}"),
        };
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Answer::NotConnected);
        }
        let uitd = self.uitd.as_ref().map(|(a, _)| *a);
        if let Some(addr) = uitd {
            self.shared.unregister(addr, self.conn);
        }
        observe::disconnected(self.peer, uitd, &why);
    }
}

fn now() -> TimeLabel {
    TimeLabel::from_utc(Utc::now())
}

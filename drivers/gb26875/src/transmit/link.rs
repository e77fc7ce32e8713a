//! One TCP connection to a centre: the reader task (answers, heartbeats) and the upload
//! with its confirm wait and retransmissions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::TransmitSettings;
use super::state::{Inbound, UitdState};
use crate::codec::{Adu, EncodeError, Frame, FrameDecoder, TimeLabel};
use campusgw_sdk::log::LogLimiter;

/// Why an upload or a connect failed.
#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    /// No centre accepted a connection.
    #[error("no fire-monitoring centre reachable: {0}")]
    Unreachable(String),
    /// Every attempt was answered with a deny (command 6).
    #[error("the centre denied the upload (serial {serial}) on all {attempts} attempts")]
    Denied {
        /// The frame's serial.
        serial: u16,
        /// Attempts written.
        attempts: u32,
    },
    /// No confirm came for any attempt (some may have been denied); the link is closed.
    #[error(
        "no confirm for serial {serial} after {attempts} attempts of {timeout:?}; reconnecting"
    )]
    NoConfirm {
        /// The frame's serial.
        serial: u16,
        /// Attempts written.
        attempts: u32,
        /// The wait per attempt.
        timeout: Duration,
    },
    /// The connection was lost (closed, reset, heartbeat unanswered).
    #[error("connection to the centre lost: {0}")]
    Closed(String),
    /// The upload cannot be framed.
    #[error("upload cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
}

/// A confirmed upload.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Which centre: 0 the primary, 1 the first backup, ...
    pub centre: usize,
    /// The centre as configured (`host:port`).
    pub endpoint: String,
    /// The address it was reached at.
    pub address: SocketAddr,
    /// The frame's serial.
    pub serial: u16,
    /// Attempts written, the first included.
    pub attempts: u32,
    /// When the confirm arrived (our clock).
    pub confirmed_at: DateTime<Utc>,
}

/// Things from the centre kept while an upload waits for its confirm, at most.
const BACKLOG: usize = 64;

/// What the reader task reports.
enum Wire {
    In(Inbound),
    Closed(String),
}

/// An open link to one centre.
pub struct CentreLink {
    settings: Arc<TransmitSettings>,
    state: Arc<Mutex<UitdState>>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    rx: mpsc::Receiver<Wire>,
    backlog: VecDeque<Inbound>,
    reader: tokio::task::JoinHandle<()>,
    /// Which centre (index into `centres`).
    pub centre: usize,
    /// The centre as configured.
    pub endpoint: String,
    /// The address connected to.
    pub address: SocketAddr,
}

impl Drop for CentreLink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn now_label() -> TimeLabel {
    TimeLabel::from_utc(Utc::now())
}

fn lock(state: &Mutex<UitdState>) -> std::sync::MutexGuard<'_, UitdState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CentreLink {
    /// Connects to the first centre of `settings.centres` that accepts, in order; the
    /// serial of `state` starts again at 0.
    ///
    /// # Errors
    /// [`TransmitError::Unreachable`] naming each centre's failure.
    pub async fn connect(
        settings: Arc<TransmitSettings>,
        state: Arc<Mutex<UitdState>>,
    ) -> Result<CentreLink, TransmitError> {
        let mut failures = Vec::new();
        for (i, endpoint) in settings.centres.iter().enumerate() {
            let attempt =
                tokio::time::timeout(settings.connect_timeout, TcpStream::connect(endpoint)).await;
            let stream = match attempt {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
                Err(_) => {
                    failures.push(format!("{endpoint}: connect timed out"));
                    continue;
                }
            };
            let address = stream
                .peer_addr()
                .map_err(|e| TransmitError::Closed(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            lock(&state).connection_opened();
            let (rd, wr) = stream.into_split();
            let writer = Arc::new(tokio::sync::Mutex::new(wr));
            let (tx, rx) = mpsc::channel(64);
            let reader = tokio::spawn(serve(
                rd,
                writer.clone(),
                state.clone(),
                settings.clone(),
                tx,
            ));
            tracing::info!(centre = i, %endpoint, %address, "connected to the fire-monitoring centre");
            return Ok(CentreLink {
                settings: settings.clone(),
                state,
                writer,
                rx,
                backlog: VecDeque::new(),
                reader,
                centre: i,
                endpoint: endpoint.clone(),
                address,
            });
        }
        Err(TransmitError::Unreachable(failures.join("; ")))
    }

    /// Uploads `adu` (command 2) and waits for its confirm, retransmitting the same bytes
    /// on silence or deny (see the module doc).
    ///
    /// # Errors
    /// [`TransmitError::Denied`] (link kept), [`TransmitError::NoConfirm`] or
    /// [`TransmitError::Closed`] (the link is dead: drop it and reconnect),
    /// [`TransmitError::Encode`].
    pub async fn upload(&mut self, adu: &Adu) -> Result<Receipt, TransmitError> {
        let frame = lock(&self.state).upload(Some(adu), now_label())?;
        self.send_frame(&frame).await
    }

    /// Writes `frame` (already numbered) and waits for its confirm, as [`Self::upload`].
    ///
    /// # Errors
    /// As [`Self::upload`].
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<Receipt, TransmitError> {
        let bytes = frame.encode()?;
        let tries = u32::from(self.settings.retries) + 1;
        let timeout = self.settings.confirm_timeout;
        let mut denied = 0;
        for attempt in 1..=tries {
            write(&self.writer, &bytes).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let got = tokio::time::timeout_at(deadline, self.rx.recv()).await;
                match got {
                    Err(_) => break,
                    Ok(None) => return Err(TransmitError::Closed("reader ended".into())),
                    Ok(Some(Wire::Closed(why))) => return Err(TransmitError::Closed(why)),
                    Ok(Some(Wire::In(Inbound::Confirmed(s)))) if s == frame.serial => {
                        return Ok(Receipt {
                            centre: self.centre,
                            endpoint: self.endpoint.clone(),
                            address: self.address,
                            serial: frame.serial,
                            attempts: attempt,
                            confirmed_at: Utc::now(),
                        });
                    }
                    Ok(Some(Wire::In(Inbound::Denied(s)))) if s == frame.serial => {
                        denied += 1;
                        break;
                    }
                    // A late answer to an earlier frame.
                    Ok(Some(Wire::In(Inbound::Confirmed(_) | Inbound::Denied(_)))) => {}
                    Ok(Some(Wire::In(other))) => self.keep(other),
                }
            }
            tracing::debug!(
                serial = frame.serial,
                attempt,
                "no confirm; retransmitting the same frame"
            );
        }
        if denied == tries {
            return Err(TransmitError::Denied {
                serial: frame.serial,
                attempts: tries,
            });
        }
        self.reader.abort();
        Err(TransmitError::NoConfirm {
            serial: frame.serial,
            attempts: tries,
            timeout,
        })
    }

    /// Keeps what arrived during an upload for [`Self::next_inbound`]; a centre flooding
    /// reads meanwhile cannot grow it past [`BACKLOG`] (the oldest non-check goes).
    fn keep(&mut self, i: Inbound) {
        if self.backlog.len() >= BACKLOG {
            let drop = self
                .backlog
                .iter()
                .position(|b| !matches!(b, Inbound::DutyCheck { .. }))
                .unwrap_or(0);
            self.backlog.remove(drop);
        }
        self.backlog.push_back(i);
    }

    /// The next thing the centre sent besides answers (duty checks, clock syncs, reads
    /// answered, frames refused). Cancel-safe.
    ///
    /// # Errors
    /// [`TransmitError::Closed`] when the link is dead.
    pub async fn next_inbound(&mut self) -> Result<Inbound, TransmitError> {
        if let Some(i) = self.backlog.pop_front() {
            return Ok(i);
        }
        loop {
            match self.rx.recv().await {
                None => return Err(TransmitError::Closed("reader ended".into())),
                Some(Wire::Closed(why)) => return Err(TransmitError::Closed(why)),
                Some(Wire::In(Inbound::Confirmed(_) | Inbound::Denied(_))) => {}
                Some(Wire::In(i)) => return Ok(i),
            }
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.writer.lock().await.shutdown().await;
    }
}

async fn write(w: &tokio::sync::Mutex<OwnedWriteHalf>, bytes: &[u8]) -> Result<(), TransmitError> {
    w.lock()
        .await
        .write_all(bytes)
        .await
        .map_err(|e| TransmitError::Closed(e.to_string()))
}

/// The reader task: decodes the centre's frames, answers them, sends heartbeats.
async fn serve(
    mut rd: OwnedReadHalf,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    state: Arc<Mutex<UitdState>>,
    settings: Arc<TransmitSettings>,
    tx: mpsc::Sender<Wire>,
) {
    let why = serve_until_closed(&mut rd, &writer, &state, &settings, &tx).await;
    tracing::info!(reason = %why, "fire-monitoring centre link closed");
    let _ = writer.lock().await.shutdown().await;
    let _ = tx.send(Wire::Closed(why)).await;
}

async fn serve_until_closed(
    rd: &mut OwnedReadHalf,
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    state: &Mutex<UitdState>,
    settings: &TransmitSettings,
    tx: &mpsc::Sender<Wire>,
) -> String {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut limit = LogLimiter::new(Duration::from_secs(10));
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat,
        settings.heartbeat,
    );
    let mut beat: Option<u16> = None;
    loop {
        while let Some(item) = decoder.next_item(&mut buf) {
            let reply = match item {
                Ok(frame) => {
                    let handled = lock(state).handle(&frame, now_label());
                    if beat == Some(frame.serial)
                        && handled.inbound == Inbound::Confirmed(frame.serial)
                    {
                        beat = None;
                        continue;
                    }
                    if let Inbound::Refused(reason) = handled.inbound {
                        refused(reason, frame.serial, &mut limit);
                    }
                    if tx.send(Wire::In(handled.inbound)).await.is_err() {
                        return "link dropped".into();
                    }
                    handled.reply
                }
                Err(e) => {
                    refused(e.reason(), e.serial().unwrap_or(0), &mut limit);
                    e.header().map(|h| Frame::deny_for(h, now_label()))
                }
            };
            if let Some(r) = reply {
                let Ok(bytes) = r.encode() else { continue };
                if let Err(e) = write(writer, &bytes).await {
                    return e.to_string();
                }
            }
        }
        tokio::select! {
            n = rd.read_buf(&mut buf) => match n {
                Ok(0) => return "closed by the centre".into(),
                Ok(_) => {}
                Err(e) => return e.to_string(),
            },
            _ = heartbeat.tick() => {
                if let Some(s) = beat {
                    return format!("heartbeat serial {s} unconfirmed for {:?}", settings.heartbeat);
                }
                let Ok(frame) = lock(state).upload(None, now_label()) else { continue };
                beat = Some(frame.serial);
                let Ok(bytes) = frame.encode() else { continue };
                if let Err(e) = write(writer, &bytes).await {
                    return e.to_string();
                }
            }
        }
    }
}

/// A frame from the centre refused with a deny: counted, logged at most every 10 s.
fn refused(reason: &'static str, serial: u16, limit: &mut LogLimiter) {
    metrics::counter!("campusgw_gb26875_uplink_refused_total", "reason" => reason).increment(1);
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(
            reason,
            serial,
            suppressed,
            "frame from the fire-monitoring centre refused; answered deny"
        );
    }
}

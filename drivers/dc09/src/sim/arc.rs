//! [`ArcSim`]: a simulated alarm receiving centre, over TCP or UDP, for the transmitter's
//! tests and `campusgw demo`.
//!
//! It decodes every frame (with a key per account), records what it decoded, and answers
//! as told: per message from a script ([`ArcSim::script`]), else by its mode ([`ArcMode`]):
//! ACK (NAK with its clock when the message's timestamp is outside its time window, so a
//! shifted clock ([`ArcSim::set_clock_offset`]) makes it NAK as a real receiver does), NAK,
//! DUH, silence, closing the connection after reading, or garbage bytes.
//! [`ArcSim::wait_received`] waits until it has decoded N messages.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::crypto::Key;
use crate::driver::next_frame;
use crate::frame::{Frame, Message};
use crate::time::TimeWindow;

/// How the simulated ARC answers a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcMode {
    /// ACK every message it can decode whose timestamp (if any) is inside its window;
    /// NAK (with its clock) the rest.
    Ack,
    /// NAK every message, with its clock.
    Nak,
    /// DUH: it will not handle this content.
    Duh,
    /// Answer nothing.
    Silent,
    /// Read the message, then close the connection without answering (TCP; UDP: silent).
    Close,
    /// Answer bytes that are no DC-09 frame.
    Garbage,
}

struct State {
    mode: ArcMode,
    script: VecDeque<ArcMode>,
    clock_offset: i64,
    received: Vec<Message>,
}

struct Shared {
    state: Mutex<State>,
    keys: HashMap<String, Key>,
    count: watch::Sender<usize>,
}

/// What to do after a frame.
enum Reply {
    Nothing,
    Send(Vec<u8>),
    Close,
}

fn random_pad(buf: &mut [u8]) {
    rand::fill(buf);
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer(&self, raw: &[u8]) -> Reply {
        let mut st = self.state();
        let now = Utc::now() + chrono::Duration::seconds(st.clock_offset);
        let opened = Frame::decode(raw).and_then(|f| {
            let acct = f
                .header()
                .account
                .as_number()
                .unwrap_or_default()
                .to_owned();
            let key = self.keys.get(&acct);
            f.open(key).map(|o| (o.message, key))
        });
        let Ok((message, key)) = opened else {
            // A receiver NAKs what it cannot read (DC-09: CRC, format, decryption).
            return match st.mode {
                ArcMode::Silent => Reply::Nothing,
                _ => send(Message::nak(now).encode()),
            };
        };
        let mode = st.script.pop_front().unwrap_or(st.mode);
        st.received.push(message.clone());
        let n = st.received.len();
        drop(st);
        self.count.send_replace(n);
        match mode {
            ArcMode::Ack => match message.timestamp {
                Some(ts) if TimeWindow::default().check(ts, now).is_err() => {
                    send(Message::nak(now).encode())
                }
                _ => send(Message::ack(&message, now).encode_with(key, &mut random_pad)),
            },
            ArcMode::Nak => send(Message::nak(now).encode()),
            ArcMode::Duh => send(Message::duh(&message, now).encode()),
            ArcMode::Silent => Reply::Nothing,
            ArcMode::Close => Reply::Close,
            ArcMode::Garbage => Reply::Send(b"\n0000zzzz\"ACK?\r".to_vec()),
        }
    }
}

fn send(frame: Result<Vec<u8>, crate::Dc09Error>) -> Reply {
    frame.map_or(Reply::Nothing, Reply::Send)
}

/// A simulated alarm receiving centre.
pub struct ArcSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ArcSim {
    /// Listens for TCP on `addr` (`127.0.0.1:0` in tests) with a key per account.
    ///
    /// # Errors
    /// [`io::Error`] when it cannot bind.
    pub async fn bind(
        addr: SocketAddr,
        keys: HashMap<String, Key>,
        mode: ArcMode,
    ) -> io::Result<ArcSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = ArcSim::shared(keys, mode);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(tcp_connection(stream, s.clone()));
            }
        });
        Ok(ArcSim { addr, shared, task })
    }

    /// Receives UDP datagrams on `addr`, one frame each, and answers to their sender.
    ///
    /// # Errors
    /// [`io::Error`] when it cannot bind.
    pub async fn bind_udp(
        addr: SocketAddr,
        keys: HashMap<String, Key>,
        mode: ArcMode,
    ) -> io::Result<ArcSim> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let shared = ArcSim::shared(keys, mode);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4200];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                if let Reply::Send(r) = s.answer(buf.get(..n).unwrap_or_default()) {
                    let _ = socket.send_to(&r, peer).await;
                }
            }
        });
        Ok(ArcSim { addr, shared, task })
    }

    fn shared(keys: HashMap<String, Key>, mode: ArcMode) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                mode,
                script: VecDeque::new(),
                clock_offset: 0,
                received: Vec::new(),
            }),
            keys,
            count: watch::channel(0).0,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how it answers from the next message on (after any scripted answers).
    pub fn set_mode(&self, mode: ArcMode) {
        self.shared.state().mode = mode;
    }

    /// Answers the next messages it decodes with these, in order; then by its mode.
    pub fn script(&self, answers: impl IntoIterator<Item = ArcMode>) {
        self.shared.state().script.extend(answers);
    }

    /// Shifts its clock by `seconds` (for its time window and the timestamps it sends).
    pub fn set_clock_offset(&self, seconds: i64) {
        self.shared.state().clock_offset = seconds;
    }

    /// Its clock now.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.shared.state().clock_offset)
    }

    /// Every message decoded so far (whatever the answer was).
    pub fn received(&self) -> Vec<Message> {
        self.shared.state().received.clone()
    }

    /// Waits until it has decoded at least `n` messages; false if `timeout` passed first.
    pub async fn wait_received(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for ArcSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tcp_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some(frame) = next_frame(&mut buf) {
            match shared.answer(&frame) {
                Reply::Nothing => {}
                Reply::Close => return,
                Reply::Send(r) => {
                    if stream.write_all(&r).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

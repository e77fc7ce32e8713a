//! Simulators for tests and `campusgw demo`: a DC-09 panel (or panic button) and an alarm
//! receiving centre (ARC).
//!
//! [`PanelSim`] sends scripted events (ADM-CID, SIA-DCS, NULL; plain or encrypted) over TCP
//! or UDP, waits for the reply, retransmits on NAK or timeout with the same sequence number
//! (restamped; after a NAK it corrects its clock from the NAK's timestamp, as panels do),
//! and can misbehave: restart its sequence, send a zero or wrong clock, garbage or half
//! frames, or go silent (just do not call [`PanelSim::null`]).
//!
//! [`ArcSim`] (in `sim/arc.rs`) is a receiving centre over TCP or UDP that ACKs, NAKs
//! (with its clock, or when a message falls outside its window), DUHs, stays silent,
//! closes, or answers garbage, per message from a script, and records what it decoded.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::crypto::Key;
use crate::data::{CidData, CidEvent, Data, Qualifier, SiaData};
use crate::driver::next_frame;
use crate::frame::{Account, Message, MessageId, Sequence};
use crate::time::Timestamp;
use crate::{Dc09Error, decode};

mod arc;

/// How a simulated device reaches its receiver (the transmitter's own type).
pub use crate::transmit::Transport;
pub use arc::{ArcMode, ArcSim};

/// The clock a simulated panel stamps its messages with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The real clock plus the correction learnt from NAKs.
    Real,
    /// The real clock shifted by this many seconds (a panel whose clock is wrong).
    Offset(i64),
    /// 1970-01-01 00:00:00 (a panel that lost its clock).
    Zero,
    /// No timestamp at all.
    Absent,
}

/// What a simulated panel is and how it behaves.
#[derive(Debug, Clone)]
pub struct PanelConfig {
    /// TCP or UDP.
    pub transport: Transport,
    /// The receiver's address.
    pub receiver_addr: SocketAddr,
    /// The account (3-16 hex digits).
    pub account: String,
    /// `R` receiver number, if any.
    pub receiver: Option<String>,
    /// `L` line prefix.
    pub prefix: String,
    /// The AES key; messages are encrypted when set.
    pub key: Option<Key>,
    /// How long to wait for a reply per attempt.
    pub ack_timeout: Duration,
    /// Retransmissions after the first attempt.
    pub retries: u32,
    /// The clock it stamps with.
    pub clock: Clock,
    /// Whether it sets its clock from a NAK's timestamp before retransmitting.
    pub follow_nak_clock: bool,
}

impl PanelConfig {
    /// A plain panel for `account` at `addr`: 2 s per attempt, 3 retries, real clock.
    pub fn new(transport: Transport, addr: SocketAddr, account: &str) -> PanelConfig {
        PanelConfig {
            transport,
            receiver_addr: addr,
            account: account.to_owned(),
            receiver: None,
            prefix: "0".to_owned(),
            key: None,
            ack_timeout: Duration::from_secs(2),
            retries: 3,
            clock: Clock::Real,
            follow_nak_clock: true,
        }
    }
}

/// One scripted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// Contact ID `QEEE GG ZZZ` in an ADM-CID message.
    ContactId {
        /// New, restore or status.
        qualifier: Qualifier,
        /// The event code (120 panic, 130 burglary, ...).
        code: u16,
        /// The partition.
        partition: u8,
        /// The zone or user.
        zone: u16,
    },
    /// SIA DCS `Nri<area>/<code><address>` in a SIA-DCS message.
    Sia {
        /// The area (`ri`).
        area: String,
        /// The two-letter code (`PA`, `BA`, ...).
        code: String,
        /// The zone or user after the code.
        address: String,
    },
    /// A NULL supervision message.
    Null,
}

impl SimEvent {
    /// A new Contact ID event.
    pub fn cid(code: u16, partition: u8, zone: u16) -> SimEvent {
        SimEvent::ContactId {
            qualifier: Qualifier::New,
            code,
            partition,
            zone,
        }
    }

    /// A SIA DCS event.
    pub fn sia(area: &str, code: &str, address: &str) -> SimEvent {
        SimEvent::Sia {
            area: area.to_owned(),
            code: code.to_owned(),
            address: address.to_owned(),
        }
    }
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// ACKed (with the matching sequence) after this many attempts.
    Acked {
        /// Attempts made, 1 for the first.
        attempts: u32,
    },
    /// The receiver answered DUH: it will not handle this content.
    Duh {
        /// Attempts made.
        attempts: u32,
    },
    /// No ACK after every attempt.
    NoAck {
        /// Attempts made.
        attempts: u32,
        /// NAKs among the replies.
        naks: u32,
    },
}

/// Why the simulator could not work.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A socket failed.
    #[error("dc09 simulator i/o: {0}")]
    Io(#[from] io::Error),
    /// A message could not be encoded.
    #[error("dc09 simulator cannot encode: {0}")]
    Encode(#[from] Dc09Error),
}

enum Link {
    Tcp(TcpStream, Vec<u8>),
    Udp(UdpSocket),
}

/// A simulated panel or panic button.
pub struct PanelSim {
    config: PanelConfig,
    link: Link,
    sequence: Sequence,
    /// Seconds learnt from NAKs.
    correction: i64,
    /// Every reply received, in order.
    pub replies: Vec<Message>,
}

fn random_pad(buf: &mut [u8]) {
    rand::fill(buf);
}

impl PanelSim {
    /// Connects (TCP) or binds an ephemeral loopback-or-any socket (UDP).
    ///
    /// # Errors
    /// [`io::Error`] when the socket cannot be opened.
    pub async fn connect(config: PanelConfig) -> io::Result<PanelSim> {
        let link = Self::open(&config).await?;
        Ok(PanelSim {
            config,
            link,
            sequence: Sequence::ZERO,
            correction: 0,
            replies: Vec::new(),
        })
    }

    /// Opens a new connection (TCP) or socket (UDP) to the same receiver, keeping the
    /// sequence number and clock, as a panel does after its receiver restarted.
    ///
    /// # Errors
    /// [`io::Error`] when the socket cannot be opened; the old link is kept then.
    pub async fn reconnect(&mut self) -> io::Result<()> {
        self.link = Self::open(&self.config).await?;
        Ok(())
    }

    async fn open(config: &PanelConfig) -> io::Result<Link> {
        Ok(match config.transport {
            Transport::Tcp => {
                let s = TcpStream::connect(config.receiver_addr).await?;
                s.set_nodelay(true)?;
                Link::Tcp(s, Vec::new())
            }
            Transport::Udp => {
                let local: SocketAddr = if config.receiver_addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local).await?;
                s.connect(config.receiver_addr).await?;
                Link::Udp(s)
            }
        })
    }

    /// Changes the clock.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock_reset();
        self.config.clock = clock;
    }

    fn clock_reset(&mut self) {
        self.correction = 0;
    }

    /// Starts numbering again from 0001, as a panel does after a reboot.
    pub fn restart_sequence(&mut self) {
        self.sequence = Sequence::ZERO;
    }

    /// The sequence number the last message used.
    pub fn sequence(&self) -> Sequence {
        self.sequence
    }

    fn stamp(&self) -> Option<Timestamp> {
        let now = Utc::now();
        let at = |secs: i64| Timestamp::new(now + chrono::Duration::seconds(secs));
        match self.config.clock {
            Clock::Real => Some(at(self.correction)),
            Clock::Offset(s) => Some(at(s + self.correction)),
            Clock::Zero => Some(Timestamp::new(DateTime::<Utc>::UNIX_EPOCH)),
            Clock::Absent => None,
        }
    }

    /// The message `event` becomes with sequence `sequence` and the current clock.
    pub fn message(&self, event: &SimEvent, sequence: Sequence) -> Message {
        let acct = Account::Number(self.config.account.clone());
        let (id, data) = match event {
            SimEvent::ContactId {
                qualifier,
                code,
                partition,
                zone,
            } => (
                MessageId::AdmCid,
                Data::ContactId(CidData {
                    account: Some(self.config.account.clone()),
                    event: CidEvent {
                        qualifier: *qualifier,
                        code: *code,
                        partition: *partition,
                        zone: *zone,
                    },
                }),
            ),
            SimEvent::Sia {
                area,
                code,
                address,
            } => (
                MessageId::SiaDcs,
                Data::Sia(SiaData::event(
                    Some(self.config.account.clone()),
                    area,
                    code,
                    address,
                )),
            ),
            SimEvent::Null => (MessageId::Null, Data::Empty),
        };
        Message {
            encrypted: self.config.key.is_some(),
            receiver: self.config.receiver.clone(),
            prefix: Some(self.config.prefix.clone()),
            data,
            timestamp: self.stamp(),
            ..Message::new(id, sequence, acct)
        }
    }

    /// Encodes `msg` (encrypting with the panel's key when it is marked encrypted).
    ///
    /// # Errors
    /// [`Dc09Error`] when a field cannot be written.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>, Dc09Error> {
        msg.encode_with(self.config.key.as_ref(), &mut random_pad)
    }

    /// Sends `event` with the next sequence number and retries until ACK or DUH.
    ///
    /// # Errors
    /// [`SimError`] when the socket fails or the message cannot be encoded.
    pub async fn send(&mut self, event: &SimEvent) -> Result<Outcome, SimError> {
        self.sequence = self.sequence.next();
        let seq = self.sequence;
        let mut naks = 0;
        for attempt in 1..=self.config.retries.saturating_add(1) {
            // Each attempt is restamped, as panels do.
            let msg = self.message(event, seq);
            let bytes = self.encode(&msg)?;
            self.send_raw(&bytes).await?;
            let deadline = tokio::time::Instant::now() + self.config.ack_timeout;
            while let Some(reply) = self.read_reply_until(deadline).await? {
                match reply.id {
                    MessageId::Ack if reply.sequence == seq => {
                        return Ok(Outcome::Acked { attempts: attempt });
                    }
                    MessageId::Duh if reply.sequence == seq => {
                        return Ok(Outcome::Duh { attempts: attempt });
                    }
                    MessageId::Nak => {
                        naks += 1;
                        if let (true, Some(ts)) = (self.config.follow_nak_clock, reply.timestamp) {
                            // Set our clock to the receiver's: offset so that stamp() = ts.
                            let base = match self.config.clock {
                                Clock::Offset(s) => s,
                                _ => 0,
                            };
                            if self.config.clock == Clock::Zero {
                                self.config.clock = Clock::Real;
                            }
                            self.correction = ts.offset_from(Utc::now()) - base;
                        }
                        break;
                    }
                    // A stale ACK of an earlier attempt or message: keep waiting.
                    _ => {}
                }
            }
        }
        Ok(Outcome::NoAck {
            attempts: self.config.retries.saturating_add(1),
            naks,
        })
    }

    /// A NULL supervision message.
    ///
    /// # Errors
    /// As [`PanelSim::send`].
    pub async fn null(&mut self) -> Result<Outcome, SimError> {
        self.send(&SimEvent::Null).await
    }

    /// Writes bytes as they are (garbage, half frames, a hand-made frame).
    ///
    /// # Errors
    /// [`io::Error`] from the socket.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.link {
            Link::Tcp(s, _) => s.write_all(bytes).await,
            Link::Udp(s) => s.send(bytes).await.map(|_| ()),
        }
    }

    /// The next reply within `timeout`, decoded (with the panel's key); `None` on timeout.
    /// Undecodable replies are skipped.
    ///
    /// # Errors
    /// [`io::Error`] from the socket; a closed TCP connection is `UnexpectedEof`.
    pub async fn read_reply(&mut self, timeout: Duration) -> io::Result<Option<Message>> {
        self.read_reply_until(tokio::time::Instant::now() + timeout)
            .await
    }

    async fn read_reply_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> io::Result<Option<Message>> {
        loop {
            let raw = match &mut self.link {
                Link::Tcp(s, buf) => loop {
                    if let Some(f) = next_frame(buf) {
                        break Some(f);
                    }
                    let mut chunk = [0u8; 1024];
                    match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                        Err(_) => break None,
                        Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                        Ok(Err(e)) => return Err(e),
                    }
                },
                Link::Udp(s) => {
                    let mut buf = vec![0u8; 4200];
                    match tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
                        Err(_) => None,
                        Ok(Ok(n)) => buf.get(..n).map(<[u8]>::to_vec),
                        Ok(Err(e)) => return Err(e),
                    }
                }
            };
            let Some(raw) = raw else { return Ok(None) };
            if let Ok(o) = decode(&raw, self.config.key.as_ref()) {
                self.replies.push(o.message.clone());
                return Ok(Some(o.message));
            }
        }
    }
}

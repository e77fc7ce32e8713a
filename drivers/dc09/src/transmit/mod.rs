//! The DC-09 transmitter: campusgw's side of the police uplink (issue 13 item 3), sending
//! events to one or more alarm receiving centres (ARCs) and waiting for each ACK.
//!
//! - [`TransmitConfig`]: receivers (primary, then backups), TCP or UDP, account, `R`/`L`,
//!   ADM-CID or SIA-DCS, optional AES key, timeouts, retries, failover; pure validation.
//! - [`MessageMap`]: event → message, pure and table-driven ([`CODES`]; partition and zone
//!   from the event's device or location).
//! - [`Transmitter`]: `send` one message and get a [`Receipt`] naming the receiver that
//!   acknowledged it, or a [`TransmitError`]; `supervise` sends a NULL.
//!
//! # What a receiver must answer (PROTOCOLS §2; SIA DC-09 as pysiaalarm and fioletoven/dc09
//! # implement it)
//! - `ACK` with our sequence number and account (encrypted when our message was; we accept
//!   either): delivered.
//! - `NAK` (`"NAK"0000R0L0A0[]_<its clock>`): the receiver refused the frame, usually for
//!   its time window. We set our clock offset to its timestamp minus our clock and resend
//!   at once, same sequence, restamped. The first NAK of a message at a receiver is free;
//!   a further one counts as a failed attempt (a receiver that NAKs everything, for a wrong
//!   key say, must not hold an alarm forever).
//! - `DUH` with our sequence: the receiver understood the frame and will not handle this
//!   content. That is its verdict on this event: [`TransmitError::Refused`], never retried.
//! - Anything else for our sequence is ignored; an ACK or DUH for another sequence is a
//!   stale answer to an earlier attempt and ignored; bytes that do not decode (through
//!   [`crate::Frame::decode`], the fuzzed decoder) fail the attempt.
//!
//! # Timestamps
//! Every message carries `_HH:MM:SS,MM-DD-YYYY` (encrypted ones must): our clock at the
//! moment of each attempt plus the offset learnt from that receiver's NAKs (each receiver
//! has its own: a backup's clock may disagree with the primary's). The brief asked for the event
//! time plus the offset; that would make every event sent from a backlog (after an
//! outage) fall outside the receiver's window (pysiaalarm: -40 s / +20 s) and be NAKed,
//! and each NAK would teach an offset that is wrong for the next event. The DC-09
//! timestamp protects against replays; it is the time of transmission, as panels send it.
//!
//! # Failover
//! - Each message is tried at the current receiver up to `retries + 1` times (timeout,
//!   connect or I/O failure, garbage reply); then at each further receiver in order, the
//!   same way, wrapping round; all failed → [`TransmitError::Unreachable`] with the reason
//!   per receiver. An alarm is never given up while a receiver is untried.
//! - Each failure counts against its receiver; `failover_after` consecutive failures make
//!   the next receiver the current one (the one messages start at). A success resets the
//!   count.
//! - After `return_to_primary_after` on a backup the primary is due for a probe: one NULL,
//!   one attempt ([`Transmitter::probe_primary`], or [`Transmitter::supervise`], which
//!   probes first when one is due); if it is acknowledged the primary is current again,
//!   else the probe waits another period. An event is never used as the probe: it goes to
//!   the current receiver at once, so an alarm never waits on a primary that may still be
//!   dead. The caller probes while idle ([`Transmitter::primary_probe_due`]); the probe
//!   may be cancelled (dropped) when an alarm arrives, and is tried again a period later.
//! - TCP connections open lazily (bounded by `connect_timeout`), stay open between
//!   messages and are reopened after the receiver closes them; a frame lost on a reused
//!   connection the receiver had closed is resent once on a fresh one without counting.
//! - Sequence numbers run 0001-9999 and wrap to 0001 ([`Sequence::next`]); a retry keeps
//!   its message's number.
//!
//! Sources: SIA DC-09 message layout and replies as in PROTOCOLS §2 (pysiaalarm `event.py`
//! / `const.py`, fioletoven/dc09, dc09_spt for the NAK clock rule); Contact ID codes from
//! the Ademco / SIA DC-05 table; SIA DCS codes from SIA DC-03 as pysiaalarm 3.2.2 lists them.

mod config;
mod error;
mod link;
mod message;

use std::net::SocketAddr;
use std::time::Duration;

use campusgw_sdk::ConfigIssue;
use chrono::Utc;
use tokio::time::Instant;

pub use config::{Endpoint, Format, TransmitConfig, Transport, ZoneRule};
pub use error::{AttemptError, Receipt, ReceiverFailure, TransmitError};
pub use message::{CODES, CodeRow, DURESS, EventCode, MapError, MessageMap, code_for};

use crate::Dc09Error;
use crate::crypto::Key;
use crate::frame::{Account, Frame, Message, MessageId, Sequence};
use crate::time::Timestamp;
use link::Link;

/// What one attempt heard back.
enum Answer {
    Ack,
    Duh,
    Nak(Option<Timestamp>),
}

/// Sends DC-09 messages to the configured receivers, one at a time (module doc: answers,
/// failover, timestamps).
pub struct Transmitter {
    endpoints: Vec<Endpoint>,
    transport: Transport,
    key: Option<Key>,
    ack_timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    failover_after: u32,
    return_after: Duration,
    supervision: Option<Duration>,
    map: MessageMap,
    sequence: Sequence,
    /// Per receiver: seconds its clock is ahead of ours, learnt from its NAKs.
    clock_offsets: Vec<i64>,
    current: usize,
    failed_over_at: Option<Instant>,
    failures: Vec<u32>,
    /// Per receiver: its open connection (kept across messages and failovers).
    links: Vec<Option<Link>>,
    /// Frames sent for the message in flight.
    sent: u32,
}

impl std::fmt::Debug for Transmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmitter")
            .field("endpoints", &self.endpoints)
            .field("current", &self.current)
            .field("sequence", &self.sequence)
            .field("clock_offsets", &self.clock_offsets)
            .finish_non_exhaustive()
    }
}

impl Transmitter {
    /// A transmitter for `config`; reads `key_file` when one is given. Opens nothing: the
    /// first [`Transmitter::send`] connects.
    ///
    /// # Errors
    /// [`TransmitError::Config`] with every problem; [`TransmitError::Key`] when the key
    /// file cannot be read.
    pub fn new(config: &TransmitConfig) -> Result<Transmitter, TransmitError> {
        let issues = config.validate(&campusgw_sdk::FieldPath::root());
        if !issues.is_empty() {
            return Err(TransmitError::Config(issues));
        }
        let endpoints = config.endpoints().map_err(|(i, e)| {
            TransmitError::Config(vec![ConfigIssue::new(
                campusgw_sdk::FieldPath::root().key("receivers").index(i),
                e,
            )])
        })?;
        let key = config
            .key_source()
            .load()
            .map_err(|e| TransmitError::Key(e.to_string()))?;
        Ok(Transmitter {
            failures: vec![0; endpoints.len()],
            clock_offsets: vec![0; endpoints.len()],
            links: std::iter::repeat_with(|| None)
                .take(endpoints.len())
                .collect(),
            endpoints,
            transport: config.transport,
            key,
            ack_timeout: config.ack_timeout.0,
            connect_timeout: config.connect_timeout.0,
            retries: config.retries,
            failover_after: config.failover_after,
            return_after: config.return_to_primary_after.0,
            supervision: config.supervision.map(|d| d.0),
            map: MessageMap::new(config),
            sequence: Sequence::ZERO,
            current: 0,
            failed_over_at: None,
            sent: 0,
        })
    }

    /// The event → message map of this transmitter's configuration.
    pub fn map(&self) -> &MessageMap {
        &self.map
    }

    /// How often the configuration asks for a NULL; the caller schedules
    /// [`Transmitter::supervise`].
    pub fn supervision_interval(&self) -> Option<Duration> {
        self.supervision
    }

    /// The receiver messages start at now (0 the primary).
    pub fn current_receiver(&self) -> usize {
        self.current
    }

    /// Seconds added to our clock in timestamps sent to `receiver`, learnt from its NAKs
    /// (receivers may disagree with each other, so each has its own).
    pub fn clock_offset(&self, receiver: usize) -> i64 {
        self.clock_offsets.get(receiver).copied().unwrap_or(0)
    }

    /// The sequence number the last message used.
    pub fn sequence(&self) -> Sequence {
        self.sequence
    }

    /// Continues numbering after `last` (say, restored after a restart).
    pub fn set_sequence(&mut self, last: Sequence) {
        self.sequence = last;
    }

    /// Sends a NULL supervision message and returns its receipt; when a probe of the
    /// primary is due it makes one attempt there first (module doc, "Failover").
    ///
    /// # Errors
    /// As [`Transmitter::send`].
    pub async fn supervise(&mut self) -> Result<Receipt, TransmitError> {
        let null = self.map.null();
        self.send_planned(&null, true).await
    }

    /// Sends a NULL to the current receiver (and on through the backups), never probing
    /// the primary first: the caller probes separately with [`Transmitter::probe_primary`].
    ///
    /// # Errors
    /// As [`Transmitter::send`].
    pub async fn supervise_current(&mut self) -> Result<Receipt, TransmitError> {
        let null = self.map.null();
        self.send_planned(&null, false).await
    }

    /// When the primary is due for a probe: `return_to_primary_after` after the failover
    /// (or after the last probe); `None` while the primary is current.
    pub fn primary_probe_due(&self) -> Option<Instant> {
        if self.current == 0 || self.endpoints.len() < 2 {
            return None;
        }
        self.failed_over_at.map(|t| t + self.return_after)
    }

    /// Probes the primary with one NULL, one attempt (bounded by `ack_timeout`): true when
    /// it acknowledged and is current again. Whatever else happens (silence, a refusal, a
    /// NAK, whose clock is learnt), the next probe is due a period later, also when this
    /// future is dropped before it finishes (an alarm arriving meanwhile goes to the
    /// current receiver instead of waiting for it).
    ///
    /// # Errors
    /// [`TransmitError::Encode`] when the NULL cannot be written.
    pub async fn probe_primary(&mut self) -> Result<bool, TransmitError> {
        self.failed_over_at = Some(Instant::now());
        let null = self.map.null();
        self.frame(0, &null, Sequence::ZERO)?;
        let sequence = self.sequence.next();
        self.sequence = sequence;
        self.sent = 0;
        match self.attempt(0, &null, sequence).await? {
            Ok(Answer::Ack) => {
                self.succeeded(0);
                Ok(true)
            }
            Ok(Answer::Nak(ts)) => {
                if let (Some(ts), Some(o)) = (ts, self.clock_offsets.get_mut(0)) {
                    *o = ts.offset_from(Utc::now());
                }
                Ok(false)
            }
            Ok(Answer::Duh) | Err(_) => Ok(false),
        }
    }

    /// Sends `message` with the next sequence number and a fresh timestamp per attempt
    /// and waits for the ACK. Only the message's ID, data and extended data are used: the
    /// header (account, `R`, `L`, encryption) is the configuration's, as
    /// [`MessageMap`] writes it.
    ///
    /// # Errors
    /// [`TransmitError::Refused`] on DUH; [`TransmitError::Unreachable`] when no receiver
    /// acknowledged; [`TransmitError::Encode`] when the message cannot be written.
    pub async fn send(&mut self, message: &Message) -> Result<Receipt, TransmitError> {
        self.send_planned(message, false).await
    }

    /// [`Transmitter::send`], probing the primary first when `probe` and one is due.
    async fn send_planned(
        &mut self,
        message: &Message,
        probe: bool,
    ) -> Result<Receipt, TransmitError> {
        // Refuse an unwritable message before it costs any receiver a failure.
        self.frame(0, message, Sequence::ZERO)?;
        let sequence = self.sequence.next();
        self.sequence = sequence;
        self.sent = 0;
        let mut failures = Vec::new();
        for (receiver, max) in self.plan(probe) {
            match self.try_receiver(receiver, max, message, sequence).await? {
                Ok(()) => {
                    return Ok(Receipt {
                        receiver,
                        endpoint: self.endpoint(receiver),
                        address: self
                            .links
                            .get(receiver)
                            .and_then(|l| l.as_ref().map(|l| l.peer))
                            .unwrap_or_else(unspecified),
                        acknowledged_at: Utc::now(),
                        sequence,
                        attempts: self.sent,
                    });
                }
                Err(f) => failures.push(f),
            }
        }
        Err(TransmitError::Unreachable { failures })
    }

    /// The receivers to try, in order, with the attempts each may have (first one at the
    /// primary when `probe` and a probe is due).
    fn plan(&mut self, probe: bool) -> Vec<(usize, u32)> {
        let n = self.endpoints.len();
        let full = self.retries.saturating_add(1);
        let mut plan = Vec::with_capacity(n + 1);
        if probe
            && self.current != 0
            && self
                .failed_over_at
                .is_some_and(|t| t.elapsed() >= self.return_after)
        {
            plan.push((0, 1));
            // The probe's outcome decides; until then, wait a whole period again.
            self.failed_over_at = Some(Instant::now());
        }
        plan.extend((0..n).map(|i| ((self.current + i) % n, full)));
        plan
    }

    fn endpoint(&self, i: usize) -> Endpoint {
        self.endpoints
            .get(i)
            .cloned()
            .unwrap_or(Endpoint::Addr(unspecified()))
    }

    /// Up to `max` attempts at one receiver. `Err` only for an encoding error or DUH.
    async fn try_receiver(
        &mut self,
        receiver: usize,
        max: u32,
        message: &Message,
        sequence: Sequence,
    ) -> Result<Result<(), ReceiverFailure>, TransmitError> {
        let mut tried = 0;
        let mut free_nak = true;
        let mut reason = AttemptError::Timeout;
        while tried < max {
            tried += 1;
            match self.attempt(receiver, message, sequence).await? {
                Ok(Answer::Ack) => {
                    self.succeeded(receiver);
                    return Ok(Ok(()));
                }
                Ok(Answer::Duh) => {
                    if let Some(n) = self.failures.get_mut(receiver) {
                        *n = 0;
                    }
                    return Err(TransmitError::Refused {
                        receiver,
                        endpoint: self.endpoint(receiver),
                        sequence,
                    });
                }
                Ok(Answer::Nak(ts)) => {
                    if let (Some(ts), Some(o)) = (ts, self.clock_offsets.get_mut(receiver)) {
                        *o = ts.offset_from(Utc::now());
                    }
                    if std::mem::take(&mut free_nak) {
                        tried -= 1;
                        continue;
                    }
                    reason = AttemptError::Nak;
                }
                Err(e) => reason = e,
            }
            if self.failed(receiver) {
                break;
            }
        }
        Ok(Err(ReceiverFailure {
            receiver,
            endpoint: self.endpoint(receiver),
            attempts: tried,
            reason,
        }))
    }

    fn succeeded(&mut self, receiver: usize) {
        if let Some(n) = self.failures.get_mut(receiver) {
            *n = 0;
        }
        if receiver == 0 {
            self.current = 0;
            self.failed_over_at = None;
        }
    }

    /// Counts a failure; true when it moved the current receiver on (stop trying this one).
    fn failed(&mut self, receiver: usize) -> bool {
        let Some(n) = self.failures.get_mut(receiver) else {
            return true;
        };
        *n = n.saturating_add(1);
        if *n < self.failover_after || self.endpoints.len() < 2 {
            return false;
        }
        if receiver == self.current {
            self.current = (receiver + 1) % self.endpoints.len();
            self.failed_over_at = Some(Instant::now());
        }
        true
    }

    /// The frame for `message` with `sequence` and our clock corrected for `receiver`.
    fn frame(
        &self,
        receiver: usize,
        message: &Message,
        sequence: Sequence,
    ) -> Result<Vec<u8>, Dc09Error> {
        let now = Utc::now() + chrono::Duration::seconds(self.clock_offset(receiver));
        // The header is ours whatever the caller put there: an ACK is matched on our
        // account, and a configured key must never be left unused.
        let m = Message {
            data: message.data.clone(),
            extended: message.extended.clone(),
            sequence,
            timestamp: Some(Timestamp::new(now)),
            ..self.map.header(message.id)
        };
        m.encode_with(self.key.as_ref(), &mut |buf: &mut [u8]| rand::fill(buf))
    }

    /// One frame out, one answer back. Outer `Err`: the message cannot be encoded.
    async fn attempt(
        &mut self,
        receiver: usize,
        message: &Message,
        sequence: Sequence,
    ) -> Result<Result<Answer, AttemptError>, TransmitError> {
        let frame = self.frame(receiver, message, sequence)?;
        let (first, reused) = self.exchange(receiver, &frame, sequence).await;
        // A receiver that closed an idle connection: resend once on a fresh one, free.
        if reused && matches!(first, Err(AttemptError::Closed | AttemptError::Io(_))) {
            return Ok(self.exchange(receiver, &frame, sequence).await.0);
        }
        Ok(first)
    }

    /// Writes `frame` to `receiver` (connecting when needed) and reads until the answer
    /// for `sequence`; also says whether the connection had carried an earlier frame. The
    /// link is kept after an answer and dropped after any failure.
    async fn exchange(
        &mut self,
        receiver: usize,
        frame: &[u8],
        sequence: Sequence,
    ) -> (Result<Answer, AttemptError>, bool) {
        let open = self.links.get_mut(receiver).and_then(Option::take);
        let mut link = match open {
            Some(l) => l,
            None => match self.endpoints.get(receiver) {
                None => return (Err(AttemptError::Closed), false),
                Some(e) => match Link::open(e, self.transport, self.connect_timeout).await {
                    Ok(l) => l,
                    Err(e) => return (Err(e), false),
                },
            },
        };
        let reused = link.used;
        self.sent = self.sent.saturating_add(1);
        let deadline = Instant::now() + self.ack_timeout;
        let answer = async {
            link.write(frame, deadline).await?;
            loop {
                let raw = link.read(deadline).await?;
                if let Some(a) = self.classify(&raw, sequence)? {
                    return Ok(a);
                }
            }
        }
        .await;
        if let (true, Some(slot)) = (answer.is_ok(), self.links.get_mut(receiver)) {
            *slot = Some(link);
        }
        (answer, reused)
    }

    /// What a frame from the receiver means for `sequence`; `None`: not an answer to it.
    fn classify(&self, raw: &[u8], sequence: Sequence) -> Result<Option<Answer>, AttemptError> {
        let message = Frame::decode(raw)
            .and_then(|f| f.open(self.key.as_ref()))
            .map_err(AttemptError::Garbage)?
            .message;
        let ours = message.sequence == sequence && self.is_our_account(&message.account);
        Ok(match message.id {
            MessageId::Ack if ours => Some(Answer::Ack),
            MessageId::Duh if ours => Some(Answer::Duh),
            MessageId::Nak => Some(Answer::Nak(message.timestamp)),
            _ => None,
        })
    }

    fn is_our_account(&self, account: &Account) -> bool {
        match account {
            Account::Number(a) => a.eq_ignore_ascii_case(self.map.account()),
            // Some receivers leave the account out of their replies; the sequence decides.
            Account::Absent => true,
            Account::Placeholder(_) => false,
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn transmitter(key: Option<&str>) -> Transmitter {
        let mut c = TransmitConfig::new(vec!["127.0.0.1:9".into()], "5A01");
        c.key = key.map(str::to_owned);
        Transmitter::new(&c).unwrap()
    }

    fn ack(seq: u16, key: Option<&Key>) -> Vec<u8> {
        let mut m = Message::new(
            MessageId::Ack,
            Sequence::new(seq).unwrap(),
            Account::Number("5A01".into()),
        );
        m.encrypted = key.is_some();
        m.receiver = Some("0".into());
        m.timestamp = Some(Timestamp::new(Utc::now()));
        m.encode_with(key, &mut crate::FixedPad(b"pad".to_vec()))
            .unwrap()
    }

    #[test]
    fn the_transmitter_and_its_send_can_move_between_tasks() {
        fn is_send<T: Send>(_: &T) {}
        let mut tx = transmitter(None);
        is_send(&tx);
        let null = tx.map().null();
        is_send(&tx.send(&null));
    }

    #[test]
    fn answers_are_ours_only_with_our_sequence_and_account() {
        let tx = transmitter(None);
        let seq = Sequence::new(7).unwrap();
        assert!(matches!(
            tx.classify(&ack(7, None), seq),
            Ok(Some(Answer::Ack))
        ));
        assert!(matches!(tx.classify(&ack(6, None), seq), Ok(None)));
        let other = Message::new(MessageId::Ack, seq, Account::Number("5A02".into()))
            .encode()
            .unwrap();
        assert!(matches!(tx.classify(&other, seq), Ok(None)));
        let nak = Message::nak(Utc::now()).encode().unwrap();
        assert!(matches!(
            tx.classify(&nak, seq),
            Ok(Some(Answer::Nak(Some(_))))
        ));
        assert!(matches!(
            tx.classify(b"\nnonsense\r", seq),
            Err(AttemptError::Garbage(_))
        ));
        let key = Key::parse("0123456789abcdef", crate::KeyEncoding::Text).unwrap();
        let sealed = transmitter(Some("0123456789abcdef"));
        assert!(matches!(
            sealed.classify(&ack(7, Some(&key)), seq),
            Ok(Some(Answer::Ack))
        ));
        assert!(matches!(
            tx.classify(&ack(7, Some(&key)), seq),
            Err(AttemptError::Garbage(_))
        ));
    }

    #[test]
    fn the_header_is_the_configurations_whatever_the_caller_wrote() {
        let tx = transmitter(Some("0123456789abcdef"));
        let mut m = tx.map().null();
        m.account = Account::Number("FFFF".into());
        m.encrypted = false;
        m.prefix = None;
        let frame = tx.frame(0, &m, Sequence::new(3).unwrap()).unwrap();
        let key = Key::parse("0123456789abcdef", crate::KeyEncoding::Text).unwrap();
        let back = crate::decode(&frame, Some(&key)).unwrap().message;
        assert!(back.encrypted, "a configured key is always used");
        assert_eq!(back.account, Account::Number("5A01".into()));
        assert_eq!(back.prefix.as_deref(), Some("0"));
        assert_eq!(back.sequence.value(), 3);
        assert!(back.timestamp.is_some());
    }

    proptest! {
        #[test]
        fn no_answer_bytes_make_the_reply_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let tx = transmitter(Some("0123456789abcdef"));
            let _ = tx.classify(&bytes, Sequence::new(1).unwrap());
        }

        #[test]
        fn damaged_acks_are_garbage_or_not_ours_never_a_panic(at in 0usize..60, byte in any::<u8>()) {
            let tx = transmitter(None);
            let mut frame = ack(1, None);
            let i = at % frame.len();
            frame[i] = byte;
            let _ = tx.classify(&frame, Sequence::new(1).unwrap());
        }
    }
}

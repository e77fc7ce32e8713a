//! What a send ends with: a [`Receipt`], or a [`TransmitError`] with the reason per
//! receiver ([`ReceiverFailure`], [`AttemptError`]).

use std::net::SocketAddr;

use campusgw_sdk::ConfigIssue;
use chrono::{DateTime, Utc};

use crate::Dc09Error;
use crate::frame::Sequence;
use crate::transmit::Endpoint;

/// Proof that a receiver acknowledged a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Which receiver: 0 the primary, 1 the first backup, ...
    pub receiver: usize,
    /// The receiver as configured.
    pub endpoint: Endpoint,
    /// The address it was reached at.
    pub address: SocketAddr,
    /// Our clock when the ACK arrived.
    pub acknowledged_at: DateTime<Utc>,
    /// The message's sequence number.
    pub sequence: Sequence,
    /// Frames sent for it, over all receivers: 1 when the first was ACKed; the resend
    /// after a NAK and the resend on a fresh connection count here, though neither counts
    /// as a failed attempt.
    pub attempts: u32,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The host name did not resolve.
    #[error("cannot resolve: {0}")]
    Resolve(String),
    /// The connect (with the lookup) took longer than `connect_timeout`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The connect was refused or failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Writing or reading failed.
    #[error("i/o: {0}")]
    Io(String),
    /// The receiver closed the connection before answering.
    #[error("the receiver closed the connection")]
    Closed,
    /// No answer within `ack_timeout`.
    #[error("no answer within the ack timeout")]
    Timeout,
    /// The answer did not decode.
    #[error("undecodable answer: {0}")]
    Garbage(Dc09Error),
    /// The receiver NAKed again after we corrected our clock.
    #[error("the receiver answered NAK")]
    Nak,
}

/// Why one receiver did not acknowledge a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverFailure {
    /// Which receiver.
    pub receiver: usize,
    /// As configured.
    pub endpoint: Endpoint,
    /// Attempts made at it for this message (the free resends after a first NAK or on a
    /// fresh connection not included).
    pub attempts: u32,
    /// The last attempt's failure.
    pub reason: AttemptError,
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    /// The configuration has problems (each with its path and what to change).
    #[error("invalid dc09 transmit config: {}", join(.0))]
    Config(Vec<ConfigIssue>),
    /// The key file could not be read or holds no key.
    #[error("dc09 transmit key: {0}")]
    Key(String),
    /// The message cannot be written (a field out of range).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] Dc09Error),
    /// A receiver answered DUH: its verdict on this message. Not retried.
    #[error("receiver {receiver} ({endpoint}) refused sequence {} with DUH", .sequence.value())]
    Refused {
        /// Which receiver.
        receiver: usize,
        /// As configured.
        endpoint: Endpoint,
        /// The message's sequence number.
        sequence: Sequence,
    },
    /// No receiver acknowledged.
    #[error("no dc09 receiver acknowledged: {}", describe(.failures))]
    Unreachable {
        /// Per receiver, in the order tried.
        failures: Vec<ReceiverFailure>,
    },
}

impl TransmitError {
    /// Link trouble that a later attempt may fix ([`TransmitError::Unreachable`]); DUH,
    /// encoding and configuration errors are not.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransmitError::Unreachable { .. })
    }
}

fn join(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe(failures: &[ReceiverFailure]) -> String {
    failures
        .iter()
        .map(|f| {
            format!(
                "{} {} after {} attempt(s): {}",
                f.receiver, f.endpoint, f.attempts, f.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

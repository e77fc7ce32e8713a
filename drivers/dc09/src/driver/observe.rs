//! Each observable happening of the receiver, in one place: the log line and the metric.
//! Warnings caused by what peers send share one limiter (a line per 10 s, the rest counted
//! and summarised), so a flood of bad frames cannot flood the log.

use std::net::SocketAddr;
use std::time::Duration;

use campusgw_sdk::EmitError;

use crate::Dc09Error;
use crate::frame::MessageId;

pub(crate) use campusgw_sdk::log::LogLimiter;

fn rejected(reason: &'static str) {
    metrics::counter!("campusgw_dc09_frames_rejected_total", "reason" => reason).increment(1);
}

pub(crate) fn listening(proto: &'static str, addr: SocketAddr) {
    tracing::info!(%addr, proto, "dc09 receiver listening");
}

pub(crate) fn bind_failed(proto: &'static str, addr: SocketAddr, err: &std::io::Error) {
    metrics::counter!("campusgw_dc09_bind_failures_total").increment(1);
    tracing::warn!(%addr, proto, error = %err, "dc09 receiver cannot bind; retrying");
}

pub(crate) fn io_failed(what: &'static str, err: &std::io::Error) {
    metrics::counter!("campusgw_dc09_io_errors_total").increment(1);
    tracing::warn!(what, error = %err, "dc09 socket error; retrying in 100 ms");
}

pub(crate) fn over_cap(peer: SocketAddr, which: &'static str, cap: usize) {
    metrics::counter!("campusgw_listener_refused_total", "listener" => "dc09").increment(1);
    tracing::warn!(%peer, limit = which, cap, "dc09 connection over its limit; closed");
}

pub(crate) fn rate_limited(peer: SocketAddr, limit: &mut LogLimiter) {
    metrics::counter!("campusgw_dc09_rate_limited_total").increment(1);
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, suppressed, "dc09 source over frames_per_second; frame not answered (the panel retransmits)");
    }
}

pub(crate) fn bad_frame(peer: SocketAddr, err: &Dc09Error, limit: &mut LogLimiter) {
    rejected(match err {
        Dc09Error::Crc { .. } => "crc",
        Dc09Error::Length { .. } => "length",
        _ => "format",
    });
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, error = %err, suppressed, "dc09 frame rejected; answered NAK");
    }
}

pub(crate) fn undecryptable(peer: SocketAddr, acct: &str, err: &Dc09Error, limit: &mut LogLimiter) {
    rejected("decrypt");
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, account = acct, error = %err, suppressed,
            "dc09 message cannot be decrypted (no key or a wrong key for this account); answered NAK");
    }
}

pub(crate) fn outside_window(
    peer: SocketAddr,
    acct: &str,
    err: &Dc09Error,
    limit: &mut LogLimiter,
) {
    rejected("time_window");
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, account = acct, error = %err, suppressed, "dc09 message outside the time window; answered NAK with our clock");
    }
}

pub(crate) fn unknown_account(peer: SocketAddr, acct: &str, limit: &mut LogLimiter) {
    rejected("unknown_account");
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, account = acct, suppressed, "dc09 account not configured; answered DUH");
    }
}

pub(crate) fn unknown_code(peer: SocketAddr, acct: &str, content: &str, limit: &mut LogLimiter) {
    rejected("unknown_code");
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, account = acct, content, suppressed, "dc09 event code not in the mapping tables; answered DUH");
    }
}

pub(crate) fn unexpected_reply(peer: SocketAddr, id: MessageId, limit: &mut LogLimiter) {
    rejected("reply");
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, id = id.as_str(), suppressed, "dc09 receiver got a reply message; ignored");
    }
}

pub(crate) fn encode_failed(err: &Dc09Error) {
    metrics::counter!("campusgw_dc09_encode_failures_total").increment(1);
    tracing::error!(error = %err, "dc09 reply cannot be encoded");
}

pub(crate) fn journaled(acct: &str, duplicates: usize) {
    metrics::counter!("campusgw_dc09_events_acked_total").increment(1);
    if duplicates > 0 {
        metrics::counter!("campusgw_dc09_retransmissions_total").increment(1);
        tracing::debug!(
            account = acct,
            "dc09 retransmission recognised; ACKed again"
        );
    }
}

pub(crate) fn emit_failed(acct: &str, err: &EmitError) {
    metrics::counter!("campusgw_dc09_emit_failures_total").increment(1);
    tracing::warn!(account = acct, error = %err, "dc09 events not journaled; no ACK (the panel retransmits)");
}

pub(crate) fn account_silent(acct: &str, silent: Duration) {
    metrics::counter!("campusgw_dc09_supervision_timeouts_total").increment(1);
    tracing::warn!(
        account = acct,
        silent_s = silent.as_secs(),
        "dc09 account silent past its supervision interval; offline"
    );
}

//! Each observable happening of the driver, in one place: the log line and the metric.

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::{Address, FrameError};

pub(crate) use campusgw_sdk::log::LogLimiter;

pub(crate) fn listening(addr: SocketAddr) {
    tracing::info!(%addr, "gb26875 listening");
}

pub(crate) fn bind_failed(addr: SocketAddr, err: &std::io::Error) {
    metrics::counter!("campusgw_gb26875_bind_failures_total").increment(1);
    tracing::warn!(%addr, error = %err, "gb26875 cannot listen; retrying");
}

pub(crate) fn over_cap(listener: &str, peer: SocketAddr, cap: usize) {
    metrics::counter!("campusgw_listener_refused_total", "listener" => listener.to_owned())
        .increment(1);
    tracing::warn!(%peer, listener, max_connections = cap, "gb26875 connection over max_connections; closed");
}

pub(crate) fn accept_failed(err: &std::io::Error) {
    metrics::counter!("campusgw_gb26875_accept_failures_total").increment(1);
    tracing::warn!(error = %err, "gb26875 accept failed; retrying in 100 ms");
}

pub(crate) fn deny_dropped() {
    metrics::counter!("campusgw_gb26875_denies_dropped_total").increment(1);
}

pub(crate) fn peer_refused(peer: SocketAddr, uitd: Address) {
    metrics::counter!("campusgw_gb26875_peer_refused_total").increment(1);
    tracing::warn!(%peer, uitd = uitd.value(), "uitd address from a peer outside its `peers` list; closing connection");
}

pub(crate) fn connected(peer: SocketAddr) {
    metrics::counter!("campusgw_gb26875_connections_total").increment(1);
    tracing::info!(%peer, "uitd connected");
}

pub(crate) fn disconnected(peer: SocketAddr, uitd: Option<Address>, why: &str) {
    tracing::info!(%peer, uitd = uitd.map(Address::value), why, "uitd connection closed");
}

pub(crate) fn frame_received(command: u8) {
    metrics::counter!("campusgw_gb26875_frames_received_total", "command" => command.to_string())
        .increment(1);
}

pub(crate) fn frame_rejected(
    peer: SocketAddr,
    err: &FrameError,
    denied: bool,
    limit: &mut LogLimiter,
) {
    metrics::counter!("campusgw_gb26875_frames_rejected_total", "reason" => err.reason())
        .increment(1);
    if let Some(suppressed) = limit.allow() {
        let answer = if denied { "answered deny" } else { "no deny" };
        tracing::warn!(%peer, error = %err, suppressed, answer, "gb26875 frame rejected");
    }
}

pub(crate) fn adu_rejected(
    peer: SocketAddr,
    serial: u16,
    err: &dyn std::fmt::Display,
    limit: &mut LogLimiter,
) {
    metrics::counter!("campusgw_gb26875_frames_rejected_total", "reason" => "bad_adu").increment(1);
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, serial, error = %err, suppressed, "gb26875 adu rejected; answered deny");
    }
}

pub(crate) fn unknown_uitd(peer: SocketAddr, uitd: Address, accepted: bool) {
    metrics::counter!("campusgw_gb26875_unknown_uitd_total", "action" => if accepted { "accepted" } else { "refused" })
        .increment(1);
    if accepted {
        tracing::warn!(%peer, uitd = uitd.value(), "unconfigured uitd accepted (unknown_uitd = \"accept\")");
    } else {
        tracing::warn!(%peer, uitd = uitd.value(), "unconfigured uitd refused; closing connection");
    }
}

pub(crate) fn foreign_source(
    peer: SocketAddr,
    bound: Address,
    got: Address,
    limit: &mut LogLimiter,
) {
    metrics::counter!("campusgw_gb26875_frames_rejected_total", "reason" => "foreign_source")
        .increment(1);
    if let Some(suppressed) = limit.allow() {
        tracing::warn!(%peer, bound = bound.value(), got = got.value(), suppressed, "frame from a second uitd address on one connection; answered deny");
    }
}

pub(crate) fn confirm_withheld(uitd: Address, serial: u16, err: &dyn std::fmt::Display) {
    metrics::counter!("campusgw_gb26875_confirms_withheld_total").increment(1);
    tracing::warn!(uitd = uitd.value(), serial, error = %err, "journal refused events; not confirming (the uitd will retransmit)");
}

pub(crate) fn events_journaled(uitd: Address, serial: u16, new: usize, duplicates: usize) {
    metrics::counter!("campusgw_gb26875_events_total").increment(new as u64);
    metrics::counter!("campusgw_gb26875_duplicates_total").increment(duplicates as u64);
    tracing::debug!(
        uitd = uitd.value(),
        serial,
        new,
        duplicates,
        "upload journaled; confirming"
    );
}

pub(crate) fn uitd_silent(uitd: Address, after: Duration) {
    metrics::counter!("campusgw_gb26875_heartbeats_missed_total").increment(1);
    tracing::warn!(
        uitd = uitd.value(),
        after_s = after.as_secs_f64(),
        "uitd silent; reported offline"
    );
}

pub(crate) fn unexpected(peer: SocketAddr, serial: u16, command: u8) {
    metrics::counter!("campusgw_gb26875_frames_ignored_total", "command" => command.to_string())
        .increment(1);
    tracing::debug!(%peer, serial, command, "frame not expected from a uitd; ignored");
}

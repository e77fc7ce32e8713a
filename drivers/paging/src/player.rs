//! The zone player: one task per zone owns its calls, its arbiter and its packet clock.
//!
//! A zone is idle until a `broadcast.play` is granted by its [`ZoneQueue`]. It then opens a
//! *session*: for SIP, one task per speaker dials (retrying per policy) and reports when its
//! call is up, failed or hung up; for multicast the group is the one leg, up at once. The
//! packet clock starts when the first leg is up and ticks on an absolute schedule
//! (`t0 + n × 20 ms`): each tick sends the next frame of the playing program to every leg,
//! each with its own SSRC, sequence number and timestamp. A tick that comes late sends what
//! is due (at most [`MAX_BURST`] packets; beyond that the frames are skipped and the
//! timestamp jumps), so the stream never drifts from wall time.
//!
//! Preemption swaps the program on the open session at the next tick (no new calls, so it
//! takes one packet interval). The session closes (BYE to every speaker) when the arbiter
//! says the zone is idle.
//!
//! A `broadcast.play` is answered once every speaker has answered or failed its first attempt
//! (or at once when the session was already settled): `Succeeded` if any speaker plays,
//! with the ones not reached named; `Failed` if none.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{
    Backoff, Class, CommandStatus, DeviceHealth, DeviceId, Kind, Location, NewEvent,
};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audio::Program;
use crate::config::RetryPolicy;
use crate::priority::{Decision, Entry, Fate, Priority, ZoneQueue};
use crate::rtp::{Codec, PACKET_INTERVAL, RtpStream};
use crate::sip::{CallError, Offer, SipEndpoint, Target};

/// A tick later than this many packets skips instead of bursting.
pub(crate) const MAX_BURST: u64 = 5;

/// How a zone's speakers are reached.
pub(crate) enum Reach {
    /// Call each speaker.
    Sip {
        ep: Arc<SipEndpoint>,
        speakers: Vec<Target>,
        offer: Offer,
        retry: RetryPolicy,
    },
    /// Send to a group.
    Multicast { group: SocketAddr, codec: Codec },
}

/// A zone, ready to run.
pub(crate) struct Zone {
    pub id: DeviceId,
    pub location: Location,
    pub reach: Reach,
    /// RTP goes out from here.
    pub socket: UdpSocket,
}

/// A command's outcome on one zone.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub status: CommandStatus,
    pub detail: String,
}

/// What the dispatcher asks of a zone.
pub(crate) enum ZoneMsg {
    Play {
        entry: Entry,
        program: Program,
        reply: oneshot::Sender<Outcome>,
    },
    Stop {
        message: Option<String>,
        reply: oneshot::Sender<Outcome>,
    },
}

enum LegMsg {
    Up {
        session: u64,
        idx: usize,
        dest: SocketAddr,
        codec: Codec,
    },
    Failed {
        session: u64,
        idx: usize,
        reason: String,
        attempt: u32,
        retrying: bool,
    },
    Down {
        session: u64,
        idx: usize,
    },
}

struct Leg {
    dest: SocketAddr,
    stream: RtpStream,
    codec: Codec,
}

struct Session {
    id: u64,
    cancel: CancellationToken,
    legs: BTreeMap<usize, Leg>,
    settled: Vec<bool>,
    failures: BTreeMap<usize, String>,
    waiting: Vec<oneshot::Sender<Outcome>>,
    t0: Option<Instant>,
    sent: u64,
    unreachable_raised: bool,
}

struct Playing {
    entry: Entry,
    program: Program,
    frame: usize,
    cycles_done: u32,
}

/// What a zone reports: events to journal, or its health as the calls show it.
pub(crate) enum Report {
    Event(NewEvent),
    Health(DeviceId, DeviceHealth),
}

/// Where reports go: an emitter task that journals events in order.
pub(crate) type Events = mpsc::UnboundedSender<Report>;

struct Player {
    zone: Zone,
    names: Vec<String>,
    events: Events,
    queue: ZoneQueue,
    programs: HashMap<uuid::Uuid, Program>,
    playing: Option<Playing>,
    session: Option<Session>,
    sessions: u64,
    leg_tx: mpsc::UnboundedSender<LegMsg>,
    shutdown: CancellationToken,
    buf: Vec<u8>,
    health: Option<DeviceHealth>,
}

/// Runs a zone until shutdown or until its command channel closes.
pub(crate) async fn run_zone(
    zone: Zone,
    mut rx: mpsc::Receiver<ZoneMsg>,
    events: Events,
    shutdown: CancellationToken,
) {
    let names = match &zone.reach {
        Reach::Sip { speakers, .. } => speakers.iter().map(|s| s.uri.clone()).collect(),
        Reach::Multicast { group, .. } => vec![format!("rtp://{group}")],
    };
    let (leg_tx, mut leg_rx) = mpsc::unbounded_channel();
    let mut p = Player {
        zone,
        names,
        events,
        queue: ZoneQueue::default(),
        programs: HashMap::new(),
        playing: None,
        session: None,
        sessions: 0,
        leg_tx,
        shutdown: shutdown.clone(),
        buf: Vec::with_capacity(256),
        health: None,
    };
    loop {
        let tick = p.next_tick();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            m = rx.recv() => match m {
                Some(m) => p.on_msg(m),
                None => break,
            },
            Some(l) = leg_rx.recv() => p.on_leg(l),
            () = sleep_until_opt(tick) => p.on_tick().await,
        }
    }
    p.close("shutdown");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Player {
    fn emit(&self, kind: &'static str, class: Class, payload: serde_json::Value) {
        let e = NewEvent::new(Kind::from_static(kind), class)
            .payload(payload)
            .device(self.zone.id.clone())
            .location(self.zone.location.clone());
        // The emitter outlives the zones; a closed channel means shutdown.
        let _ = self.events.send(Report::Event(e));
    }

    fn about(&self, e: &Entry) -> serde_json::Value {
        about(&self.zone.id, e)
    }

    fn next_tick(&self) -> Option<Instant> {
        let s = self.session.as_ref()?;
        self.playing.as_ref()?;
        let t0 = s.t0?;
        Some(t0 + PACKET_INTERVAL * u32::try_from(s.sent).unwrap_or(u32::MAX))
    }

    fn on_msg(&mut self, m: ZoneMsg) {
        match m {
            ZoneMsg::Play {
                entry,
                program,
                reply,
            } => self.on_play(entry, program, reply),
            ZoneMsg::Stop { message, reply } => {
                let (stopped, next) = self.queue.stop(message.as_deref());
                for e in &stopped {
                    self.programs.remove(&e.command);
                    let mut p = self.about(e);
                    p["reason"] = json!("stopped");
                    self.emit("broadcast.stopped", Class::Operations, p);
                }
                if let Some(d) = next {
                    self.apply(d, "stopped");
                }
                let _ = reply.send(Outcome {
                    status: CommandStatus::Succeeded,
                    detail: format!("stopped {} program(s)", stopped.len()),
                });
            }
        }
    }

    fn on_play(&mut self, entry: Entry, program: Program, reply: oneshot::Sender<Outcome>) {
        // A retransmitted command (a rule's retry) joins what it already started.
        if self
            .queue
            .current()
            .is_some_and(|c| c.command == entry.command)
        {
            match &mut self.session {
                Some(s) if s.settled.iter().all(|&x| x) => {
                    let _ = reply.send(summary(s, &self.names, &entry.message));
                }
                Some(s) => s.waiting.push(reply),
                None => {}
            }
            return;
        }
        self.programs.insert(entry.command, program);
        let d = self.queue.play(entry.clone());
        if let Decision::Refused { playing } = d {
            self.programs.remove(&entry.command);
            let _ = reply.send(Outcome {
                status: CommandStatus::Rejected,
                detail: format!(
                    "zone plays a {} program (higher priority)",
                    playing.as_str()
                ),
            });
            return;
        }
        self.apply(d, "replaced");
        match &mut self.session {
            Some(s) if s.settled.iter().all(|&x| x) => {
                let o = summary(s, &self.names, &entry.message);
                let _ = reply.send(o);
            }
            Some(s) => s.waiting.push(reply),
            None => {}
        }
    }

    /// Carries out an arbiter decision.
    fn apply(&mut self, d: Decision, reason: &str) {
        match d {
            Decision::Refused { .. } => {}
            Decision::Idle => self.close(reason),
            Decision::Play { start, displaced } => {
                let resumed = displaced.is_none() && self.playing.is_some();
                if let Some((old, fate)) = displaced {
                    let mut p = self.about(&old);
                    p["reason"] = json!("preempted");
                    p["by"] = json!(start.message);
                    p["resumes"] = json!(fate == Fate::Suspended);
                    self.emit("broadcast.stopped", Class::Operations, p);
                    if fate == Fate::Ended && old.command != start.command {
                        self.programs.remove(&old.command);
                    }
                }
                let Some(program) = self.programs.get(&start.command).cloned() else {
                    tracing::error!(zone = %self.zone.id, "no program for a granted entry");
                    return;
                };
                if self.session.is_some() {
                    let mut p = self.about(&start);
                    p["speakers"] = json!(self.session.as_ref().map_or(0, |s| s.legs.len()));
                    p["resumed"] = json!(resumed);
                    self.emit("broadcast.started", class_of(start.priority), p);
                }
                self.playing = Some(Playing {
                    entry: start,
                    program,
                    frame: 0,
                    cycles_done: 0,
                });
                if self.session.is_none() {
                    self.open();
                }
            }
        }
    }

    fn open(&mut self) {
        self.sessions += 1;
        let cancel = self.shutdown.child_token();
        let n = self.names.len();
        let mut s = Session {
            id: self.sessions,
            cancel: cancel.clone(),
            legs: BTreeMap::new(),
            settled: vec![false; n],
            failures: BTreeMap::new(),
            waiting: Vec::new(),
            t0: None,
            sent: 0,
            unreachable_raised: false,
        };
        match &self.zone.reach {
            Reach::Sip {
                ep,
                speakers,
                offer,
                retry,
            } => {
                for (idx, t) in speakers.iter().enumerate() {
                    tokio::spawn(speaker_leg(
                        ep.clone(),
                        t.clone(),
                        offer.clone(),
                        *retry,
                        (s.id, idx),
                        self.leg_tx.clone(),
                        cancel.clone(),
                    ));
                }
            }
            Reach::Multicast { group, codec } => {
                let _ = self.leg_tx.send(LegMsg::Up {
                    session: s.id,
                    idx: 0,
                    dest: *group,
                    codec: *codec,
                });
                s.t0 = Some(Instant::now());
            }
        }
        self.session = Some(s);
    }

    /// Ends the session: every call is hung up.
    fn close(&mut self, reason: &str) {
        let Some(s) = self.session.take() else {
            return;
        };
        s.cancel.cancel();
        let playing = self.playing.take();
        for idx in s.legs.keys() {
            let mut p = playing
                .as_ref()
                .map_or(json!({}), |pl| self.about(&pl.entry));
            p["zone"] = json!(self.zone.id.as_str());
            p["speaker"] = json!(self.names[*idx]);
            p["reason"] = json!(reason);
            self.emit("broadcast.stopped", Class::Operations, p);
        }
        if let Some(pl) = &playing {
            for w in s.waiting {
                let _ = w.send(summary_parts(
                    &s.legs,
                    &s.failures,
                    &self.names,
                    &pl.entry.message,
                ));
            }
        }
    }

    fn on_leg(&mut self, l: LegMsg) {
        let (Some(s), Some(pl)) = (self.session.as_mut(), self.playing.as_ref()) else {
            return;
        };
        let mut about = about(&self.zone.id, &pl.entry);
        let priority = pl.entry.priority;
        match l {
            LegMsg::Up {
                session,
                idx,
                dest,
                codec,
            } if session == s.id => {
                s.legs.insert(
                    idx,
                    Leg {
                        dest,
                        stream: RtpStream::new(codec),
                        codec,
                    },
                );
                s.failures.remove(&idx);
                s.settled[idx] = true;
                if s.t0.is_none() {
                    s.t0 = Some(Instant::now());
                }
                about["speaker"] = json!(self.names[idx]);
                about["codec"] = json!(codec);
                self.emit("broadcast.started", class_of(priority), about);
            }
            LegMsg::Failed {
                session,
                idx,
                reason,
                attempt,
                retrying,
            } if session == s.id => {
                s.legs.remove(&idx);
                s.failures.insert(idx, reason.clone());
                s.settled[idx] = true;
                about["speaker"] = json!(self.names[idx]);
                about["reason"] = json!(reason);
                about["attempt"] = json!(attempt);
                about["retrying"] = json!(retrying);
                let class = if priority >= Priority::Lockdown {
                    Class::Security
                } else {
                    Class::Operations
                };
                self.emit("broadcast.failed", class, about);
            }
            LegMsg::Down { session, idx } if session == s.id => {
                s.legs.remove(&idx);
                about["speaker"] = json!(self.names[idx]);
                about["reason"] = json!("speaker hung up");
                self.emit("broadcast.stopped", Class::Operations, about);
            }
            _ => return,
        }
        self.check_settled();
    }

    fn check_settled(&mut self) {
        let (Some(s), Some(pl)) = (self.session.as_mut(), self.playing.as_ref()) else {
            return;
        };
        if !s.settled.iter().all(|&x| x) {
            return;
        }
        let (up, n) = (s.legs.len(), s.settled.len());
        let health = match up {
            0 => DeviceHealth::Offline(format!("none of {n} speakers reached")),
            _ if up < n => {
                DeviceHealth::Degraded(format!("{} of {n} speakers not reached", n - up))
            }
            _ => DeviceHealth::Online,
        };
        if self.health.as_ref() != Some(&health) {
            self.health = Some(health.clone());
            let _ = self
                .events
                .send(Report::Health(self.zone.id.clone(), health));
        }
        for w in s.waiting.drain(..) {
            let _ = w.send(summary_parts(
                &s.legs,
                &s.failures,
                &self.names,
                &pl.entry.message,
            ));
        }
        if s.legs.is_empty() && pl.entry.priority >= Priority::Lockdown && !s.unreachable_raised {
            s.unreachable_raised = true;
            let failures: BTreeMap<&str, &str> = s
                .failures
                .iter()
                .map(|(i, r)| (self.names[*i].as_str(), r.as_str()))
                .collect();
            let mut p = about(&self.zone.id, &pl.entry);
            p["failures"] = json!(failures);
            self.emit("broadcast.unreachable", Class::LifeSafety, p);
        }
    }

    async fn on_tick(&mut self) {
        let (Some(s), Some(_)) = (self.session.as_mut(), self.playing.as_ref()) else {
            return;
        };
        let Some(t0) = s.t0 else { return };
        let scheduled = t0 + PACKET_INTERVAL * u32::try_from(s.sent).unwrap_or(u32::MAX);
        crate::stats::record_tick_lateness(Instant::now().saturating_duration_since(scheduled));
        let (missing, skipped) = pace(t0.elapsed(), s.sent);
        if skipped > 0 {
            s.sent += skipped;
            tracing::warn!(zone = %self.zone.id, skipped, "rtp clock fell behind; frames skipped");
        }
        for _ in 0..skipped {
            self.advance();
        }
        for i in 0..missing {
            self.send_frame(if i == 0 { skipped } else { 0 }).await;
            if let Some(s) = self.session.as_mut() {
                s.sent += 1;
            }
            self.advance();
        }
    }

    async fn send_frame(&mut self, skipped: u64) {
        let (Some(s), Some(pl)) = (self.session.as_mut(), self.playing.as_ref()) else {
            return;
        };
        for leg in s.legs.values_mut() {
            let payload = pl.program.frame(leg.codec, pl.frame);
            leg.stream.packet(
                payload,
                u32::try_from(skipped).unwrap_or(u32::MAX),
                &mut self.buf,
            );
            if let Err(e) = self.zone.socket.send_to(&self.buf, leg.dest).await {
                tracing::debug!(zone = %self.zone.id, dest = %leg.dest, error = %e, "rtp send failed");
            }
        }
    }

    /// One frame further; at the end of the last cycle the arbiter decides what is next.
    fn advance(&mut self) {
        let Some(pl) = self.playing.as_mut() else {
            return;
        };
        pl.frame += 1;
        if pl.frame < pl.program.frames() {
            return;
        }
        pl.frame = 0;
        pl.cycles_done += 1;
        if pl.entry.cycles.is_some_and(|n| pl.cycles_done >= n) {
            let done = pl.entry.clone();
            self.programs.remove(&done.command);
            let mut p = self.about(&done);
            p["reason"] = json!("finished");
            self.emit("broadcast.stopped", Class::Operations, p);
            let d = self.queue.finished();
            self.apply(d, "finished");
        }
    }
}

/// The packet clock: `elapsed` since `t0` and `sent` packets (or skipped intervals) so far
/// give how many packets to send now and how many intervals to skip first. Packet `k` is due
/// at `t0 + k × 20 ms`; after the call, `sent + skip + send` is the number due, so RTP time
/// never drifts from the schedule however late the tick.
pub(crate) fn pace(elapsed: Duration, sent: u64) -> (u64, u64) {
    let interval = PACKET_INTERVAL.as_nanos();
    let due = u64::try_from(elapsed.as_nanos() / interval).unwrap_or(u64::MAX) + 1;
    let missing = due.saturating_sub(sent);
    if missing > MAX_BURST {
        (1, missing - 1)
    } else {
        (missing, 0)
    }
}

fn about(zone: &DeviceId, e: &Entry) -> serde_json::Value {
    json!({
        "zone": zone.as_str(),
        "message": e.message,
        "priority": e.priority.as_str(),
        "command_id": e.command.to_string(),
    })
}

fn class_of(p: Priority) -> Class {
    // A started evacuation or lockdown is part of the incident record; bells are routine.
    if p >= Priority::Lockdown {
        Class::Security
    } else {
        Class::Operations
    }
}

fn summary(s: &Session, names: &[String], message: &str) -> Outcome {
    summary_parts(&s.legs, &s.failures, names, message)
}

fn summary_parts(
    legs: &BTreeMap<usize, Leg>,
    failures: &BTreeMap<usize, String>,
    names: &[String],
    message: &str,
) -> Outcome {
    let not: Vec<String> = failures
        .iter()
        .map(|(i, r)| format!("{} ({r})", names[*i]))
        .collect();
    let mut detail = format!(
        "{message}: playing on {} of {} speakers",
        legs.len(),
        names.len()
    );
    if !not.is_empty() {
        detail.push_str("; not reached: ");
        detail.push_str(&not.join(", "));
    }
    Outcome {
        status: if legs.is_empty() {
            CommandStatus::Failed
        } else {
            CommandStatus::Succeeded
        },
        detail,
    }
}

/// One speaker's call for one session: dial, report, hold until hang-up, redial per policy.
async fn speaker_leg(
    ep: Arc<SipEndpoint>,
    target: Target,
    offer: Offer,
    retry: RetryPolicy,
    (session, idx): (u64, usize),
    tx: mpsc::UnboundedSender<LegMsg>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(retry.backoff.0, retry.backoff.0.saturating_mul(8));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let retrying = attempt < retry.attempts;
        match ep.invite(&target, &offer, &cancel).await {
            Ok(mut call) => {
                backoff.reset();
                let dest = SocketAddr::new(call.media.addr, call.media.port);
                let _ = tx.send(LegMsg::Up {
                    session,
                    idx,
                    dest,
                    codec: call.media.codec,
                });
                tokio::select! {
                    () = call.remote_hangup() => {
                        let _ = tx.send(LegMsg::Down { session, idx });
                        if !retrying {
                            return;
                        }
                    }
                    () = cancel.cancelled() => {
                        call.hang_up().await;
                        return;
                    }
                }
            }
            Err(CallError::Cancelled) => return,
            Err(e) => {
                let reason = e.to_string();
                let _ = tx.send(LegMsg::Failed {
                    session,
                    idx,
                    reason,
                    attempt,
                    retrying,
                });
                if !retrying {
                    return;
                }
            }
        }
        let wait = backoff.next_delay().min(Duration::from_secs(30));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_on_time_tick_sends_one_packet_and_a_late_one_catches_up_or_skips() {
        assert_eq!(pace(Duration::ZERO, 0), (1, 0));
        assert_eq!(pace(Duration::from_millis(19), 1), (0, 0));
        assert_eq!(pace(Duration::from_millis(61), 1), (3, 0));
        assert_eq!(pace(Duration::from_secs(1), 1), (1, 49));
    }

    proptest::proptest! {
        /// A 30-minute loop with ticks arriving up to 200 ms late: at every tick the packets
        /// sent plus the intervals skipped equal what the absolute schedule says is due.
        #[test]
        fn a_thirty_minute_loop_never_drifts_from_the_schedule(late in proptest::collection::vec(0u64..200, 1..400)) {
            let mut sent = 0u64;
            let mut now = Duration::ZERO;
            let end = Duration::from_secs(30 * 60);
            let mut i = 0;
            while now < end {
                let (send, skip) = pace(now, sent);
                sent += send + skip;
                let due = now.as_millis() as u64 / 20 + 1;
                proptest::prop_assert_eq!(sent, due);
                // the next tick: scheduled time of the next packet, plus some lateness
                now = Duration::from_millis(sent * 20 + late[i % late.len()]);
                i += 1;
            }
        }
    }
}

//! The one retry loop every uplink kind runs ([`run`]), built on the SDK's `Backoff`.
//!
//! It opens the feed at the stored cursors, connects the kind's [`Transport`], fills the
//! link's room from the feed (highest class first), and settles what the link answers:
//! - *delivered*: the event is confirmed; its class's cursor moves over the confirmed
//!   prefix and is stored by the background saver;
//! - *rejected*: `settle_rejected` records a `life_safety` or `security` event in the
//!   journal's `rejected` list before its cursor may move, and raises `uplink.rejected`;
//! - a failure (link, auth, config, capacity, a destination asking to retry, an unreadable
//!   journal): everything in flight is released, `uplink.down` is journaled once per
//!   outage with the reason, and after the back-off (or the destination's `Retry-After`) a
//!   new link is made and the same events are sent again.
//!
//! Any answer from the destination ends an outage (`uplink.up`) and resets the back-off.
//! While it backs off, a committed urgent event its filter forwards wakes it at once, and
//! while one is pending the back-off is capped at the filter's `urgent_backoff_max`
//! (`urgency.rs`: events about its own outage do not count).
//! Operator resend requests (`campusgw uplink retry-rejected`) and rule forwards are
//! polled every [`super::RESEND_POLL`] while the link is ready.

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::driver::Backoff;
use tokio::sync::watch;

use super::contract::{Link, Round, Transport, UplinkError};
use super::delivery::Delivery;
use super::feed::Feed;
use super::filter::Filter;
use super::status::UplinkStatus;
use super::urgency::Urgency;
use super::{Background, Refused, UplinkContext, clear_resent, report_down, report_up};

/// What the loop needs to know about the uplink it runs.
pub(crate) struct Setup {
    /// The uplink's name (cursor key).
    pub name: String,
    /// What it forwards.
    pub filter: Filter,
    /// The gateway's handles.
    pub cx: UplinkContext,
    /// Its status.
    pub status: Arc<UplinkStatus>,
    /// Back-off bounds.
    pub backoff: (Duration, Duration),
    /// How often backlog figures are refreshed (at most 5 s apart).
    pub stats_every: Duration,
}

enum End {
    Shutdown,
    Failed(UplinkError),
}

/// Runs an uplink until shutdown (see the module doc).
pub(crate) async fn run<T: Transport>(mut transport: T, u: Setup) {
    let mut backoff = Backoff::new(u.backoff.0, u.backoff.1);
    let Some(mut feed) = open_feed(&u, &mut backoff).await else {
        u.status.stopped();
        return;
    };
    let bg = Background::start(
        &u.cx,
        &u.name,
        &u.filter,
        u.status.clone(),
        &feed,
        u.stats_every,
    );
    let mut urgency = Urgency::new(&u.cx.journal, &u.name, &u.filter);
    loop {
        u.status.connect_attempt();
        let end = match transport.connect().await {
            Ok(link) => session(&u, link, &mut feed, &bg.cursors, &mut backoff).await,
            Err(e) => End::Failed(e),
        };
        feed.release_all();
        let e = match end {
            End::Shutdown => break,
            End::Failed(e) => e,
        };
        report_down(&u.cx, &u.name, &u.status, e.reason(), &e.to_string());
        let cursors = feed.cursors();
        let urgent = urgency.pending(cursors);
        // The long back-off grows on as usual; an urgent event only caps this one sleep,
        // so the long cap is back as soon as nothing urgent waits. A destination's
        // Retry-After is capped too: an alarm does not wait on a busy county platform.
        let mut delay = e.after().unwrap_or_else(|| backoff.next_delay());
        if urgent {
            let cap = u.filter.urgent_backoff_max();
            delay = delay.min(Backoff::new(cap, cap).next_delay());
        }
        u.status.set_urgent(urgent);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = u.cx.shutdown.cancelled() => break,
            // Already in the fast cap when urgent: a burst of alarms is no burst of connects.
            () = urgency.arrives(cursors), if !urgent => {
                tracing::info!(uplink = %u.name, "an urgent event is waiting: reconnecting now");
            }
        }
    }
    bg.stop().await;
    u.status.stopped();
}

async fn open_feed(u: &Setup, backoff: &mut Backoff) -> Option<Feed> {
    loop {
        match Feed::open(&u.name, &u.cx.journal, u.filter.clone()) {
            Ok(f) => return Some(f),
            Err(e) => {
                report_down(
                    &u.cx,
                    &u.name,
                    &u.status,
                    super::RetryReason::Journal,
                    &e.to_string(),
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = u.cx.shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// One link's life: fill, wait, settle, until it fails or shutdown fires.
async fn session<L: Link>(
    u: &Setup,
    mut link: L,
    feed: &mut Feed,
    cursors: &watch::Sender<[u64; 5]>,
    backoff: &mut Backoff,
) -> End {
    let mut committed = u.cx.journal.committed_seq();
    let mut journal_open = true;
    let mut next_poll = tokio::time::Instant::now();
    loop {
        u.status.injected_fault();
        if link.ready() && tokio::time::Instant::now() >= next_poll {
            next_poll = tokio::time::Instant::now() + super::RESEND_POLL;
            if let Err(e) = feed.poll_resends() {
                tracing::warn!(uplink = %u.name, error = %e, "cannot read resend requests");
            }
        }
        let room = match fill(&mut link, feed, *committed.borrow_and_update()) {
            Ok(room) => room,
            Err(e) => return End::Failed(e),
        };
        let (busy, ready) = (link.busy(), link.ready());
        tokio::select! {
            () = u.cx.shutdown.cancelled() => {
                link.close().await;
                return End::Shutdown;
            }
            round = link.next(feed) => {
                if let Err(e) = settle(u, round, feed, cursors, backoff).await {
                    return End::Failed(e);
                }
            }
            r = committed.changed(), if !busy && journal_open && room => {
                journal_open = r.is_ok();
            }
            () = tokio::time::sleep_until(next_poll), if !busy && ready => {}
        }
    }
}

/// Tops the link up from the feed; returns whether it has room left (for events not yet
/// committed).
fn fill<L: Link>(link: &mut L, feed: &mut Feed, committed: u64) -> Result<bool, UplinkError> {
    if link.busy() {
        return Ok(false);
    }
    let room = link.room(feed);
    let mut batch = Vec::new();
    while batch.len() < room {
        match feed.next(committed)? {
            Some(o) => batch.push(o),
            None => break,
        }
    }
    let left = batch.len() < room;
    if !batch.is_empty() {
        link.send(batch)?;
    }
    Ok(left && !link.busy())
}

/// Applies a round's answers: confirms, records rejections, clears delivered resends;
/// returns the round's failure.
async fn settle(
    u: &Setup,
    round: Round,
    feed: &mut Feed,
    cursors: &watch::Sender<[u64; 5]>,
    backoff: &mut Backoff,
) -> Result<(), UplinkError> {
    let Round {
        answers,
        mut failure,
        proven,
    } = round;
    let answered = answers
        .iter()
        .any(|a| !matches!(a.delivery, Delivery::Retry { .. }));
    if proven || answered {
        report_up(&u.cx, &u.name, &u.status);
        backoff.reset();
    }
    let (mut moved, mut delivered, mut refused) = (false, 0u64, Vec::new());
    for a in answers {
        match a.delivery {
            Delivery::Delivered => {
                delivered += 1;
                moved |= feed.confirm(a.sent.class, a.sent.seq);
            }
            Delivery::Rejected { reason } => refused.push(Refused {
                class: a.sent.class,
                seq: a.sent.seq,
                id: a.sent.id,
                alarm: a.sent.alarm,
                reason,
            }),
            Delivery::Retry { reason } => {
                failure.get_or_insert_with(|| {
                    UplinkError::retry(reason, "the destination asked to retry an event")
                });
            }
        }
    }
    if delivered > 0 {
        u.status.confirmed(delivered);
    }
    if moved {
        cursors.send_replace(feed.cursors());
    }
    if !refused.is_empty()
        && super::settle_rejected(&u.cx, &u.name, &u.status, feed, refused).await?
    {
        cursors.send_replace(feed.cursors());
    }
    clear_resent(&u.cx, &u.name, feed).await;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    //! The loop against a scripted transport: what a kind says decides what the loop does
    //! with the cursor, the outage events and the rejected list.

    use std::sync::{Arc, Mutex};

    use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

    use super::*;
    use crate::journal::{Journal, JournalOptions};
    use crate::uplink::contract::{Answer, Sent};
    use crate::uplink::delivery::RetryReason;
    use crate::uplink::feed::Outgoing;

    /// What the scripted destination does with each batch, in order; then it delivers.
    #[derive(Clone, Copy)]
    enum Act {
        Fail,
        RejectFirst,
    }

    #[derive(Default)]
    struct Log {
        connects: usize,
        /// Seqs of every batch handed to a link.
        batches: Vec<Vec<u64>>,
        script: std::collections::VecDeque<Act>,
    }

    struct Scripted(Arc<Mutex<Log>>);

    struct ScriptedLink {
        log: Arc<Mutex<Log>>,
        pending: Option<Vec<Outgoing>>,
    }

    impl Transport for Scripted {
        type Link = ScriptedLink;
        async fn connect(&mut self) -> Result<ScriptedLink, UplinkError> {
            self.0.lock().expect("log").connects += 1;
            Ok(ScriptedLink {
                log: self.0.clone(),
                pending: None,
            })
        }
    }

    impl Link for ScriptedLink {
        fn room(&mut self, _feed: &mut Feed) -> usize {
            if self.pending.is_some() { 0 } else { 10 }
        }
        fn busy(&self) -> bool {
            self.pending.is_some()
        }
        fn send(&mut self, events: Vec<Outgoing>) -> Result<(), UplinkError> {
            let seqs = events.iter().map(|o| o.seq).collect();
            self.log.lock().expect("log").batches.push(seqs);
            self.pending = Some(events);
            Ok(())
        }
        async fn next(&mut self, _feed: &mut Feed) -> Round {
            let Some(batch) = self.pending.take() else {
                return std::future::pending().await;
            };
            let act = self.log.lock().expect("log").script.pop_front();
            let answer = |o: &Outgoing, delivery| Answer {
                sent: Sent::of(o),
                delivery,
            };
            match act {
                Some(Act::Fail) => {
                    Round::failed(UplinkError::retry(RetryReason::Timeout, "scripted"))
                }
                Some(Act::RejectFirst) => Round {
                    answers: batch
                        .iter()
                        .enumerate()
                        .map(|(i, o)| {
                            let d = if i == 0 {
                                Delivery::Rejected {
                                    reason: "scripted".into(),
                                }
                            } else {
                                Delivery::Delivered
                            };
                            answer(o, d)
                        })
                        .collect(),
                    ..Round::default()
                },
                None => Round {
                    answers: batch
                        .iter()
                        .map(|o| answer(o, Delivery::Delivered))
                        .collect(),
                    ..Round::default()
                },
            }
        }
        async fn close(self) {}
    }

    async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn kinds(journal: &Journal, kind: &str) -> usize {
        let all = journal
            .reader()
            .expect("reader")
            .after(0, None, 1000)
            .expect("read");
        all.iter().filter(|e| e.kind.as_str() == kind).count()
    }

    struct Run {
        log: Arc<Mutex<Log>>,
        seqs: Vec<u64>,
        journal: Journal,
        writer: crate::journal::WriterHandle,
        _dir: tempfile::TempDir,
    }

    impl Run {
        async fn close(self) {
            self.journal.close().await;
            let w = self.writer;
            tokio::task::spawn_blocking(move || w.join())
                .await
                .expect("writer joins");
        }
    }

    /// Runs the loop over three alarms with `script`; returns the log and the journal.
    async fn run_script(script: &[Act]) -> Run {
        let dir = tempfile::tempdir().expect("dir");
        let (journal, writer) =
            Journal::open(JournalOptions::new(dir.path().join("journal.db"))).expect("journal");
        let dev = DeviceId::new("dev-1").expect("id");
        let events: Vec<Event> = (0..3)
            .map(|_| {
                let n = NewEvent::new(Kind::from_static("panic.alarm"), Class::LifeSafety);
                Event::stamp(n, &dev, "test", &Location::default())
            })
            .collect();
        let seqs = journal
            .append(events)
            .await
            .expect("append")
            .iter()
            .map(|r| r.seq)
            .collect();
        let log = Arc::new(Mutex::new(Log {
            script: script.iter().copied().collect(),
            ..Log::default()
        }));
        let stop = tokio_util::sync::CancellationToken::new();
        let cx = UplinkContext {
            journal: journal.clone(),
            gateway_id: DeviceId::new("gw").expect("id"),
            commands: None,
            drivers: None,
            shutdown: stop.clone(),
        };
        let setup = Setup {
            name: "scripted".into(),
            // Only the alarms: the loop's own uplink.* events would be forwarded too.
            filter: Filter::parse(
                None,
                Some(vec!["panic.alarm".into()]),
                &campusgw_sdk::FieldPath::root(),
                &mut Vec::new(),
            )
            .expect("filter"),
            cx,
            status: UplinkStatus::new("scripted", "test"),
            backoff: (Duration::from_millis(10), Duration::from_millis(50)),
            stats_every: Duration::from_secs(5),
        };
        let task = tokio::spawn(run(Scripted(log.clone()), setup));
        let j = journal.clone();
        wait("cursor past the three alarms", || {
            j.reader()
                .expect("reader")
                .cursor("scripted", Class::LifeSafety)
                .expect("cursor")
                >= 3
        })
        .await;
        stop.cancel();
        task.await.expect("loop ends at shutdown");
        Run {
            log,
            seqs,
            journal,
            writer,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_failed_round_keeps_its_events_and_a_new_link_sends_them_again() {
        let r = run_script(&[Act::Fail]).await;
        {
            let log = r.log.lock().expect("log");
            assert_eq!(log.connects, 2, "one new link after the failure");
            let again = vec![r.seqs.clone(), r.seqs.clone()];
            assert_eq!(log.batches, again, "the same events again");
        }
        wait("outage events", || kinds(&r.journal, "uplink.up") == 1).await;
        assert_eq!(kinds(&r.journal, "uplink.down"), 1);
        r.close().await;
    }

    #[tokio::test]
    async fn a_rejected_alarm_is_listed_and_the_cursor_moves_past_it_without_a_resend() {
        let r = run_script(&[Act::RejectFirst]).await;
        let batches = r.log.lock().expect("log").batches.clone();
        assert_eq!(batches, vec![r.seqs.clone()], "sent once");
        let listed = r
            .journal
            .rejected_reader()
            .expect("list")
            .list(Some("scripted"))
            .expect("read");
        let listed: Vec<u64> = listed.iter().map(|l| l.seq).collect();
        assert_eq!(listed, vec![r.seqs[0]]);
        wait("uplink.rejected", || {
            kinds(&r.journal, "uplink.rejected") == 1
        })
        .await;
        assert_eq!(
            kinds(&r.journal, "uplink.down"),
            0,
            "a verdict is no outage"
        );
        r.close().await;
    }
}

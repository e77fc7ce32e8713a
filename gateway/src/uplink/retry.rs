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
    loop {
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
        let delay = e.after().unwrap_or_else(|| backoff.next_delay());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = u.cx.shutdown.cancelled() => break,
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

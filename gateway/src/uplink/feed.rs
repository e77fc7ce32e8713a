//! The journal side of an uplink: what to send next, and when a cursor may move.
//!
//! One lane per class. A lane holds the events read from the journal past its cursor, in
//! seq order, each `Unsent`, `InFlight` or `Confirmed`. [`Feed::next`] takes the first
//! unsent event of the highest class that has one, reading a page from the journal when a
//! lane runs dry, so a pending `life_safety` event always goes before older `telemetry`
//! (DESIGN §4 "Delivery"). A lane's cursor moves only over a confirmed prefix: an
//! out-of-order confirmation waits until everything before it in its class is confirmed.
//! Memory stays flat: a lane holds at most the in-flight window plus one page, each event
//! as its JSON bytes ([`WireEvent`]: rows are never parsed into a `Value` tree here).
//!
//! Resends: events an operator asked to send again (`campusgw uplink retry-rejected`) are
//! queued per class with [`Feed::queue_resend`] and handed out before anything else of
//! their class. Their seqs are behind the cursor, so confirming one never moves a cursor;
//! [`Feed::take_resent`] hands the delivered ones back so the uplink can clear them from
//! the rejected list.
//!
//! Forwards: a rule's `forward` action is a `rule_actions` row (`queued`) naming this
//! uplink. [`Feed::poll_resends`] also reads those rows: an event the uplink's own filter
//! carries anyway is not sent again (the row becomes `carried`); any other is queued like a
//! resend (first in its class, even a class the filter does not want). When the destination
//! confirms it the row becomes `delivered`, when it rejects it `rejected`
//! ([`Feed::take_forward_outcomes`], written back by the uplink). The rows are durable, so
//! a forward survives a restart; a crash between delivery and the row's update sends it once
//! more, with the same event id (at-least-once, as every delivery).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use campusgw_sdk::{Class, Event};
use tokio::sync::watch;

mod wire;
pub use wire::WireEvent;

use super::filter::Filter;
use crate::journal::rejected::RejectedReader;
use crate::journal::{Journal, JournalError, JournalReader};

/// Events read from the journal per lane refill.
pub const PAGE: usize = 512;

/// Events read per refill of the telemetry lane: since event schema 2 a telemetry event is
/// a batch of a device's readings (1,000 points is ~12 KB of JSON), so a full page would
/// hold ~6 MB while a backlog drains; 64 batches keep it under 1 MB.
pub const TELEMETRY_PAGE: usize = 64;

/// An event handed to a transport; confirm it with [`Feed::confirm`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its class (lane).
    pub class: Class,
    /// Its journal seq.
    pub seq: u64,
    /// The event, as sent.
    pub event: Arc<WireEvent>,
    /// An operator-requested resend of a rejected event.
    pub resend: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Unsent,
    InFlight,
    Confirmed,
}

struct Slot {
    seq: u64,
    event: Option<Arc<WireEvent>>,
    state: SlotState,
}

struct Lane {
    class: Class,
    wanted: bool,
    cursor: u64,
    read_to: u64,
    scanned_to: u64,
    slots: VecDeque<Slot>,
    next_unsent: usize,
}

impl Lane {
    fn take_unsent(&mut self) -> Option<Outgoing> {
        while self.next_unsent < self.slots.len() {
            let i = self.next_unsent;
            self.next_unsent += 1;
            let slot = &mut self.slots[i];
            if slot.state == SlotState::Unsent {
                slot.state = SlotState::InFlight;
                let event = slot.event.clone()?;
                return Some(Outgoing {
                    class: self.class,
                    seq: slot.seq,
                    event,
                    resend: false,
                });
            }
        }
        None
    }

    fn advance(&mut self) -> bool {
        let before = self.cursor;
        while self
            .slots
            .front()
            .is_some_and(|s| s.state == SlotState::Confirmed)
        {
            if let Some(s) = self.slots.pop_front() {
                self.cursor = self.cursor.max(s.seq);
                self.next_unsent = self.next_unsent.saturating_sub(1);
            }
        }
        self.cursor != before
    }
}

/// What an uplink sends next and which cursors it may store.
pub struct Feed {
    name: String,
    reader: JournalReader,
    list: RejectedReader,
    filter: Filter,
    lanes: Vec<Lane>,
    inflight: usize,
    /// Resends waiting, per class rank.
    resends: Vec<VecDeque<Outgoing>>,
    /// Seqs of resends queued or in flight (never queued twice).
    resending: BTreeSet<u64>,
    /// Resends in flight.
    resends_out: Vec<Outgoing>,
    /// Resends delivered, not yet handed back by [`Feed::take_resent`].
    resent: Vec<u64>,
    /// Forward rows queued or in flight, by the seq of their event.
    forwards: BTreeMap<u64, Vec<i64>>,
    /// Forward rows settled (row id, new status), not yet taken.
    forward_outcomes: Vec<(i64, &'static str)>,
    /// The rules' action log (absent when it cannot be opened: no forwards then).
    rules: Option<crate::journal::rules::RulesReader>,
}

impl Feed {
    /// Opens a feed for uplink `name`, starting at its stored cursors.
    ///
    /// # Errors
    /// [`JournalError`] when the journal cannot be read.
    pub fn open(name: &str, journal: &Journal, filter: Filter) -> Result<Feed, JournalError> {
        let reader = journal.reader()?;
        let list = journal.rejected_reader()?;
        let mut lanes = Vec::with_capacity(Class::ALL.len());
        for class in Class::ALL {
            let cursor = reader.cursor(name, class)?;
            lanes.push(Lane {
                class,
                wanted: filter.wants_class(class),
                cursor,
                read_to: cursor,
                scanned_to: cursor,
                slots: VecDeque::new(),
                next_unsent: 0,
            });
        }
        Ok(Feed {
            name: name.to_owned(),
            reader,
            list,
            filter,
            lanes,
            inflight: 0,
            resends: (0..Class::ALL.len()).map(|_| VecDeque::new()).collect(),
            resending: BTreeSet::new(),
            resends_out: Vec::new(),
            resent: Vec::new(),
            forwards: BTreeMap::new(),
            forward_outcomes: Vec::new(),
            rules: journal.rules_reader().ok(),
        })
    }

    /// The next event to send: the oldest unsent event of the highest class that has one,
    /// looking at the journal up to `committed`.
    ///
    /// # Errors
    /// [`JournalError`] from reading the journal.
    pub fn next(&mut self, committed: u64) -> Result<Option<Outgoing>, JournalError> {
        for i in 0..self.lanes.len() {
            if let Some(o) = self.resends[i].pop_front() {
                self.inflight += 1;
                self.resends_out.push(o.clone());
                return Ok(Some(o));
            }
            if !self.lanes[i].wanted {
                continue;
            }
            if let Some(o) = self.lanes[i].take_unsent() {
                self.inflight += 1;
                return Ok(Some(o));
            }
            // A page may hold only filtered-out kinds: read on until the lane has something
            // to send or nothing more, so that no lower class overtakes it.
            while self.refill(i, committed)? {
                if let Some(o) = self.lanes[i].take_unsent() {
                    self.inflight += 1;
                    return Ok(Some(o));
                }
            }
        }
        Ok(None)
    }

    /// Reads the next page of lane `i`; false when there was nothing new.
    fn refill(&mut self, i: usize, committed: u64) -> Result<bool, JournalError> {
        let lane = &mut self.lanes[i];
        if lane.scanned_to >= committed {
            return Ok(false);
        }
        let size = if lane.class == Class::Telemetry {
            TELEMETRY_PAGE
        } else {
            PAGE
        };
        let page =
            self.reader
                .after_as(lane.read_to, Some(lane.class), size, WireEvent::from_row)?;
        if page.len() < size {
            // Everything committed up to `committed` (observed before the read) is in hand.
            lane.scanned_to = committed;
        }
        let got = !page.is_empty();
        for e in page {
            lane.read_to = lane.read_to.max(e.seq);
            let wanted = self.filter.wants_kind(&e.kind);
            lane.slots.push_back(Slot {
                seq: e.seq,
                state: if wanted {
                    SlotState::Unsent
                } else {
                    SlotState::Confirmed
                },
                event: wanted.then(|| Arc::new(e)),
            });
        }
        lane.advance();
        Ok(got)
    }

    /// The destination confirmed `seq`; returns true when the class's cursor moved.
    pub fn confirm(&mut self, class: Class, seq: u64) -> bool {
        if let Some(i) = self.resends_out.iter().position(|o| o.seq == seq) {
            self.resends_out.swap_remove(i);
            self.resending.remove(&seq);
            self.inflight -= 1;
            self.resent.push(seq);
            self.settle_forwards(seq, "delivered");
            return false;
        }
        let lane = &mut self.lanes[usize::from(class.rank())];
        let Ok(i) = lane.slots.binary_search_by_key(&seq, |s| s.seq) else {
            return false;
        };
        if lane.slots[i].state == SlotState::InFlight {
            self.inflight -= 1;
        }
        lane.slots[i].state = SlotState::Confirmed;
        lane.slots[i].event = None;
        lane.advance()
    }

    /// The connection is gone: everything in flight is unsent again (resent in order).
    pub fn release_all(&mut self) {
        let mut back = std::mem::take(&mut self.resends_out);
        back.sort_by_key(|o| std::cmp::Reverse(o.seq));
        for o in back {
            self.resends[usize::from(o.class.rank())].push_front(o);
        }
        for lane in &mut self.lanes {
            for s in &mut lane.slots {
                if s.state == SlotState::InFlight {
                    s.state = SlotState::Unsent;
                }
            }
            lane.next_unsent = 0;
        }
        self.inflight = 0;
    }

    /// Republishes events from `from_seq` on (county `resync`). Call with nothing in flight;
    /// cursors never move back.
    pub fn resync(&mut self, from_seq: u64) {
        self.release_all();
        for lane in &mut self.lanes {
            lane.slots.clear();
            lane.next_unsent = 0;
            lane.read_to = lane.cursor.min(from_seq.saturating_sub(1));
            lane.scanned_to = 0;
        }
    }

    /// The seq a resync starts from: the seq itself, or the first event received at or
    /// after the time (past the newest event if none was).
    ///
    /// # Errors
    /// Journal read errors.
    pub fn resync_seq(
        &self,
        from: super::county_commands::ResyncFrom,
    ) -> Result<u64, JournalError> {
        match from {
            super::county_commands::ResyncFrom::Seq(n) => Ok(n),
            super::county_commands::ResyncFrom::Time(t) => match self.reader.first_seq_since(t)? {
                Some(n) => Ok(n),
                None => Ok(self.reader.last_seq()? + 1),
            },
        }
    }

    /// Queues an operator-requested resend of `event` (a rejected event, behind the
    /// cursor); ignored when it is already queued or in flight.
    pub fn queue_resend(&mut self, event: Event) {
        if !self.resending.insert(event.seq) {
            return;
        }
        let class = event.class;
        let q = &mut self.resends[usize::from(class.rank())];
        let seq = event.seq;
        let at = q.iter().position(|o| o.seq > seq).unwrap_or(q.len());
        q.insert(
            at,
            Outgoing {
                class,
                seq,
                event: Arc::new(WireEvent::from_event(&event)),
                resend: true,
            },
        );
    }

    /// Whether a resend of `seq` is queued or in flight.
    pub fn is_resending(&self, seq: u64) -> bool {
        self.resending.contains(&seq)
    }

    /// The destination rejected `seq` (recorded by the caller): settles it like a
    /// confirmation, except that a rejected resend is only dropped (it is listed anew).
    /// Returns true when the class's cursor moved.
    pub fn reject(&mut self, class: Class, seq: u64) -> bool {
        if self.resends_out.iter().any(|o| o.seq == seq) {
            self.settle_resend(seq);
            self.settle_forwards(seq, "rejected");
            return false;
        }
        self.confirm(class, seq)
    }

    /// Drops a resend from the queue or the flight (rejected again: it is listed anew).
    pub fn settle_resend(&mut self, seq: u64) {
        if let Some(i) = self.resends_out.iter().position(|o| o.seq == seq) {
            self.resends_out.swap_remove(i);
            self.inflight -= 1;
        }
        for q in &mut self.resends {
            q.retain(|o| o.seq != seq);
        }
        self.resending.remove(&seq);
    }

    fn settle_forwards(&mut self, seq: u64, status: &'static str) {
        for id in self.forwards.remove(&seq).unwrap_or_default() {
            self.forward_outcomes.push((id, status));
        }
    }

    /// Forward rows settled since the last call: (row id, `delivered` | `rejected` |
    /// `carried` | `missing`), for the uplink to write back.
    pub fn take_forward_outcomes(&mut self) -> Vec<(i64, &'static str)> {
        std::mem::take(&mut self.forward_outcomes)
    }

    /// Queues the forwards rules asked of this uplink and not yet queued; returns how many.
    fn poll_forwards(&mut self) -> Result<usize, JournalError> {
        let Some(rules) = &self.rules else {
            return Ok(0);
        };
        let rows = rules.queued_forwards(&self.name)?;
        let mut n = 0;
        for row in rows {
            let seq = row.cause_seq;
            let known = self
                .forwards
                .get(&seq)
                .is_some_and(|ids| ids.contains(&row.id));
            let settled = self.forward_outcomes.iter().any(|(id, _)| *id == row.id);
            if known || settled {
                continue;
            }
            let Some(e) = self.reader.get(seq)? else {
                tracing::warn!(uplink = %self.name, seq, "forwarded event is no longer in the journal");
                self.forward_outcomes.push((row.id, "missing"));
                continue;
            };
            if self.filter.wants_class(e.class) && self.filter.wants_kind(&e.kind) {
                // The uplink's own filter carries it: never twice.
                self.forward_outcomes.push((row.id, "carried"));
                continue;
            }
            tracing::info!(uplink = %self.name, seq, id = %e.id, rule = %row.rule, "forwarding an event on a rule's request");
            self.forwards.entry(seq).or_default().push(row.id);
            self.queue_resend(e);
            n += 1;
        }
        Ok(n)
    }

    /// Resends delivered since the last call.
    pub fn take_resent(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.resent)
    }

    /// Queues the rejected events an operator asked to resend (`campusgw uplink
    /// retry-rejected`) and the forwards rules asked for (module doc), not yet queued;
    /// returns how many were queued.
    ///
    /// # Errors
    /// Journal read errors.
    pub fn poll_resends(&mut self) -> Result<usize, JournalError> {
        let mut n = self.poll_forwards()?;
        for seq in self.list.requested(&self.name)? {
            if self.is_resending(seq) {
                continue;
            }
            match self.reader.get(seq)? {
                Some(e) => {
                    tracing::info!(uplink = %self.name, seq, id = %e.id, "resending a rejected event on request");
                    self.queue_resend(e);
                    n += 1;
                }
                None => {
                    tracing::warn!(uplink = %self.name, seq, "rejected event to resend is no longer in the journal");
                }
            }
        }
        Ok(n)
    }

    /// Events handed out and not yet confirmed.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// The confirmed cursor per class rank.
    pub fn cursors(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for (o, l) in out.iter_mut().zip(&self.lanes) {
            *o = l.cursor;
        }
        out
    }

    /// The uplink's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Stores cursors as they move, coalescing: one journal write per class per round, never
/// on the send path. Returns when `cursors` closes, after a final store.
pub async fn save_cursors(journal: Journal, name: String, mut cursors: watch::Receiver<[u64; 5]>) {
    let mut stored = *cursors.borrow_and_update();
    loop {
        let closed = cursors.changed().await.is_err();
        let now = *cursors.borrow_and_update();
        for class in Class::ALL {
            let r = usize::from(class.rank());
            if now[r] > stored[r] {
                match journal.set_cursor(&name, class, now[r]).await {
                    Ok(()) => stored[r] = now[r],
                    Err(e) => tracing::warn!(uplink = %name, error = %e, "cursor not stored"),
                }
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;

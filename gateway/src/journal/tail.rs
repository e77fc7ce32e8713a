//! The consumer tail (DESIGN §4 "Consumers never skip"): committed events in seq order,
//! each exactly once, for the rules runner and the console's live stream.
//!
//! Two sources, one order. The fast path is the writer's in-memory commit broadcast
//! ([`Journal::subscribe`]), which carries each event right after its transaction
//! committed. The broadcast is bounded and only filled while someone listens, so it can
//! drop events (a `Lagged` receiver) or never have carried them (events committed before
//! the tail existed). Whenever the broadcast does not continue exactly where the tail
//! stands (lag, or a seq beyond the next expected one) or the committed seq is ahead of
//! it, the tail reads the journal itself ([`JournalReader::after`]) from its position
//! until it has caught up, then returns to the broadcast, skipping what it already
//! returned. Seqs the journal no longer holds (retention, quarantine) are passed over:
//! they are holes, not events.

use std::sync::Arc;

use campusgw_sdk::Event;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};

use super::{Journal, JournalError, JournalReader};

/// Events with seq greater than a position, in seq order, never skipping one.
pub struct Tail {
    reader: JournalReader,
    feed: broadcast::Receiver<Arc<Event>>,
    committed: watch::Receiver<u64>,
    /// The next seq to return (everything below it has been returned or is a hole).
    next: u64,
    /// The broadcast may have lost events: read the journal before trusting it again.
    behind: bool,
    /// An event from the broadcast beyond `next`, kept until the journal filled the gap.
    ahead: Option<Arc<Event>>,
    /// An event the wait received, offered before the broadcast is drained further.
    ready: Option<Arc<Event>>,
    /// The writer stopped: after a last read of the journal there is nothing more.
    writer_gone: bool,
}

impl Tail {
    /// A tail returning events with seq > `after`.
    ///
    /// # Errors
    /// [`JournalError`] if a read connection cannot be opened.
    pub fn new(journal: &Journal, after: u64) -> Result<Tail, JournalError> {
        // Subscribe before reading anything, so no commit falls between the two sources.
        let feed = journal.subscribe();
        Ok(Tail {
            reader: journal.reader()?,
            feed,
            committed: journal.committed_seq(),
            next: after + 1,
            behind: true,
            ahead: None,
            ready: None,
            writer_gone: false,
        })
    }

    /// The seq of the last event returned (or the starting position).
    pub fn position(&self) -> u64 {
        self.next - 1
    }

    /// Up to `max` (at least 1) events with seq beyond the last returned, in seq order;
    /// waits until there is at least one.
    ///
    /// # Errors
    /// [`JournalError::Closed`] once the journal closed and everything committed was
    /// returned; SQLite errors from the fallback read.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Arc<Event>)>, JournalError> {
        let max = max.max(1);
        loop {
            let mut out = Vec::new();
            if let Some(e) = self.ready.take() {
                self.offer(e, &mut out);
            }
            self.drain_feed(max, &mut out);
            if !out.is_empty() {
                return Ok(out);
            }
            let committed = *self.committed.borrow_and_update();
            if self.behind || self.ahead.is_some() || committed >= self.next {
                self.read_journal(max, committed, &mut out)?;
                if !out.is_empty() {
                    return Ok(out);
                }
                continue;
            }
            if self.writer_gone {
                // One last look: the writer may have committed after the watch was read.
                self.read_journal(max, committed, &mut out)?;
                if !out.is_empty() {
                    return Ok(out);
                }
                return Err(JournalError::Closed);
            }
            self.wait().await;
        }
    }

    /// Takes what the broadcast holds while it continues exactly at `next`.
    fn drain_feed(&mut self, max: usize, out: &mut Vec<(u64, Arc<Event>)>) {
        if self.behind || self.ahead.is_some() {
            return;
        }
        while out.len() < max {
            match self.feed.try_recv() {
                Ok(e) => {
                    if !self.offer(e, out) {
                        break;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => {
                    self.on_lag(n);
                    break;
                }
                Err(TryRecvError::Closed) => {
                    self.writer_gone = true;
                    break;
                }
            }
        }
    }

    /// One broadcast event: taken if it is the next, ignored if already returned, kept
    /// aside (and the journal consulted) if it is beyond the next. Returns whether the
    /// broadcast may go on being drained.
    fn offer(&mut self, e: Arc<Event>, out: &mut Vec<(u64, Arc<Event>)>) -> bool {
        if e.seq < self.next {
            return true;
        }
        if e.seq == self.next {
            self.next += 1;
            out.push((e.seq, e));
            return true;
        }
        self.ahead = Some(e);
        false
    }

    fn on_lag(&mut self, missed: u64) {
        metrics::counter!("journal_tail_lagged_total").increment(1);
        tracing::debug!(
            missed,
            at = self.next,
            "tail fell behind the commit broadcast; reading the journal"
        );
        self.behind = true;
    }

    /// Reads from the journal; leaves fallback mode once it holds nothing beyond `next`
    /// up to what was committed (or up to the broadcast event kept aside).
    fn read_journal(
        &mut self,
        max: usize,
        committed: u64,
        out: &mut Vec<(u64, Arc<Event>)>,
    ) -> Result<(), JournalError> {
        let events = self.reader.after(self.next - 1, None, max)?;
        let full = events.len() == max;
        for e in events {
            self.next = e.seq + 1;
            out.push((e.seq, Arc::new(e)));
        }
        if full {
            return Ok(());
        }
        // Caught up with the file: everything up to `committed` (and up to a kept event)
        // was returned or is a hole.
        let horizon = committed.max(self.next - 1);
        self.next = self.next.max(horizon + 1);
        if let Some(e) = self.ahead.take()
            && e.seq >= self.next
        {
            // Not yet visible as committed when read: the broadcast is the proof.
            self.next = e.seq + 1;
            out.push((e.seq, e));
        }
        self.behind = false;
        Ok(())
    }

    /// Waits for the broadcast or a commit notice.
    async fn wait(&mut self) {
        tokio::select! {
            r = self.feed.recv() => match r {
                Ok(e) => {
                    if e.seq >= self.next {
                        self.ready = Some(e);
                    }
                }
                Err(RecvError::Lagged(n)) => self.on_lag(n),
                Err(RecvError::Closed) => self.writer_gone = true,
            },
            r = self.committed.changed() => {
                if r.is_err() {
                    self.writer_gone = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use campusgw_sdk::{Class, DeviceId, Kind, Location, NewEvent};

    use super::*;
    use crate::journal::JournalOptions;

    const T: Duration = Duration::from_secs(30);

    fn ev(n: usize) -> Event {
        Event::stamp(
            NewEvent::new(Kind::new("sensor.reading").unwrap(), Class::Telemetry)
                .payload(serde_json::json!({ "n": n })),
            &DeviceId::new("dev").unwrap(),
            "test",
            &Location::default(),
        )
    }

    async fn append_n(j: &Journal, from: usize, n: usize, per_batch: usize) {
        let mut i = from;
        while i < from + n {
            let k = per_batch.min(from + n - i);
            let batch = (i..i + k).map(ev).collect();
            tokio::time::timeout(T, j.append(batch))
                .await
                .expect("append in time")
                .expect("durable");
            i += k;
        }
    }

    /// Reads until `want` events were returned; asserts strictly consecutive seqs.
    async fn read_all(tail: &mut Tail, first: u64, want: usize, max: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < want {
            let batch = tokio::time::timeout(T, tail.next_batch(max))
                .await
                .expect("tail delivers in time")
                .expect("tail reads");
            assert!(batch.len() <= max, "batch larger than asked");
            for (seq, e) in batch {
                assert_eq!(seq, e.seq, "pair carries the event's own seq");
                seqs.push(seq);
            }
        }
        let expected: Vec<u64> = (first..first + want as u64).collect();
        assert_eq!(seqs, expected, "no event skipped, none repeated");
        seqs
    }

    fn open() -> (tempfile::TempDir, Journal, crate::journal::WriterHandle) {
        let dir = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(dir.path().join("j.db"));
        o.quick_check = false;
        let (j, w) = Journal::open(o).unwrap();
        (dir, j, w)
    }

    #[tokio::test]
    async fn tail_returns_events_committed_before_it_existed_then_live_ones() {
        let (_d, j, w) = open();
        append_n(&j, 0, 50, 7).await;
        let mut tail = Tail::new(&j, 10).unwrap();
        read_all(&mut tail, 11, 40, 16).await;
        append_n(&j, 50, 30, 4).await;
        read_all(&mut tail, 51, 30, 16).await;
        assert_eq!(tail.position(), 80);
        j.close().await;
        w.join();
    }

    #[tokio::test]
    async fn tail_that_lags_past_the_broadcast_capacity_reads_the_journal_and_skips_nothing() {
        let (_d, j, w) = open();
        let mut tail = Tail::new(&j, 0).unwrap();
        // 10,000 events while the consumer reads nothing: the broadcast (4096) overflows.
        append_n(&j, 0, 10_000, 500).await;
        read_all(&mut tail, 1, 10_000, 1000).await;
        append_n(&j, 10_000, 5, 1).await;
        read_all(&mut tail, 10_001, 5, 1000).await;
        j.close().await;
        w.join();
    }

    #[tokio::test]
    async fn slow_consumer_racing_a_producer_sees_every_event_once_in_order() {
        let (_d, j, w) = open();
        let mut tail = Tail::new(&j, 0).unwrap();
        let producer = {
            let j = j.clone();
            tokio::spawn(async move { append_n(&j, 0, 12_000, 37).await })
        };
        let mut seqs = Vec::new();
        while seqs.len() < 12_000 {
            let batch = tokio::time::timeout(T, tail.next_batch(100))
                .await
                .expect("in time")
                .expect("reads");
            seqs.extend(batch.into_iter().map(|(s, _)| s));
            if seqs.len() % 1000 < 100 {
                // A consumer that is sometimes slow, so the fast path and the fallback alternate.
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        producer.await.unwrap();
        assert_eq!(seqs, (1..=12_000).collect::<Vec<u64>>());
        j.close().await;
        w.join();
    }

    #[tokio::test]
    async fn tail_reports_closed_after_the_journal_closed_and_everything_was_returned() {
        let (_d, j, w) = open();
        append_n(&j, 0, 3, 3).await;
        let mut tail = Tail::new(&j, 0).unwrap();
        j.close().await;
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
        read_all(&mut tail, 1, 3, 10).await;
        let end = tokio::time::timeout(T, tail.next_batch(10))
            .await
            .expect("in time");
        assert!(
            matches!(end, Err(JournalError::Closed)),
            "{:?}",
            end.map(|b| b.len())
        );
    }
}

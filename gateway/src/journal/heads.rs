//! The newest durable seq of each class, published by the sync stage after every commit
//! (a `tokio::sync::watch`, indexed by [`Class::rank`]).
//!
//! The uplinks' retry loops wait on it while they back off ([`crate::uplink`]'s
//! `urgency`): a committed `life_safety` event wakes them at once without anyone polling
//! SQLite. The value only grows; it is sent after the transaction committed and after the
//! committed seq ([`crate::journal::Journal::committed_seq`]) moved, so a seq seen here is
//! readable by every reader and not above the committed seq.

use campusgw_sdk::Class;
use rusqlite::Connection;
use tokio::sync::watch;

/// Newest committed seq per class rank (0 when the class has none).
pub type Heads = [u64; 5];

/// The writer's side.
pub(super) struct HeadsTx {
    tx: watch::Sender<Heads>,
}

impl HeadsTx {
    /// A channel starting at what the journal holds.
    pub(super) fn open(conn: &Connection) -> rusqlite::Result<(HeadsTx, watch::Receiver<Heads>)> {
        let mut heads = [0u64; 5];
        for c in Class::ALL {
            // One descent of events_by_class (class, seq) per class.
            let max: Option<i64> = conn.query_row(
                "SELECT MAX(seq) FROM events WHERE class = ?1",
                [c.rank()],
                |r| r.get(0),
            )?;
            heads[usize::from(c.rank())] = max.map_or(0, |m| u64::try_from(m).unwrap_or(0));
        }
        let (tx, rx) = watch::channel(heads);
        Ok((HeadsTx { tx }, rx))
    }

    /// After a commit: the (class, seq) of the events it wrote. Receivers wake only when a
    /// head moved.
    pub(super) fn publish(&self, written: impl IntoIterator<Item = (Class, u64)>) {
        let mut next = *self.tx.borrow();
        for (class, seq) in written {
            let h = &mut next[usize::from(class.rank())];
            *h = (*h).max(seq);
        }
        self.tx.send_if_modified(|h| {
            let moved = *h != next;
            *h = next;
            moved
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_start_at_the_journal_and_move_only_forward() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, class INTEGER NOT NULL);
             INSERT INTO events VALUES (3, 0), (7, 4);",
        )
        .expect("schema");
        let (tx, mut rx) = HeadsTx::open(&conn).expect("open");
        assert_eq!(*rx.borrow_and_update(), [3, 0, 0, 0, 7]);
        tx.publish([(Class::Telemetry, 5)]);
        assert!(
            !rx.has_changed().expect("open"),
            "an older seq moves nothing"
        );
        tx.publish([(Class::LifeSafety, 9), (Class::Security, 8)]);
        assert!(rx.has_changed().expect("open"));
        assert_eq!(*rx.borrow_and_update(), [9, 8, 0, 0, 7]);
    }
}

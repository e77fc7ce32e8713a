//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the committing transaction, so the writer (and
//! every emitter waiting on it) would stall while WAL pages are copied into the database
//! and the database file is fsync'd. The writer's connection therefore has
//! `wal_autocheckpoint=0`, and this thread checkpoints from its own connection: PASSIVE
//! every [`INTERVAL`] (never blocks the writer), and RESTART once the WAL holds more than
//! [`RESTART_FRAMES`] frames, so that under continuous load the WAL is rewound instead of
//! growing without bound. Durability is unaffected: a committed transaction is durable in
//! the WAL; checkpointing only moves it into the main file.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// How often a passive checkpoint runs.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages) beyond which a RESTART checkpoint rewinds the WAL (~64 MiB).
pub const RESTART_FRAMES: i64 = 16_384;

/// The running checkpointer; dropping the sender stops it.
pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path`.
    pub(super) fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let (stop, rx) = mpsc::channel();
        let path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || run(&path, &rx))?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(path: &PathBuf, stop: &mpsc::Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "journal checkpointer cannot open the database; the WAL will grow until restart");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(INTERVAL) {
        let frames = checkpoint(&conn, "PASSIVE");
        if frames > RESTART_FRAMES {
            checkpoint(&conn, "RESTART");
        }
    }
}

/// Runs a checkpoint; returns the WAL's frame count (0 on error).
fn checkpoint(conn: &Connection, mode: &str) -> i64 {
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    match conn.query_row(&sql, [], |r| r.get::<_, i64>(1)) {
        Ok(frames) => {
            metrics::gauge!("journal_wal_frames").set(frames as f64);
            frames
        }
        Err(e) => {
            tracing::debug!(error = %e, mode, "wal checkpoint failed; retrying later");
            0
        }
    }
}

//! Start-up check: is the file on disk a journal the writer can work with?
//!
//! The check at open costs the same with ten events or ten million, so start-to-ready does
//! not grow with the backlog (DESIGN §6: ≤ 1 s with 1,000,000 events):
//! 1. the file itself: missing or 0 bytes while the marker `journal.id` says a journal was
//!    created here (damage, never a silent fresh start); shorter than the 100-byte SQLite
//!    header; not starting with `"SQLite format 3\0"`; shorter than the page count its
//!    header states (a truncated copy); a freelist pointing past the end;
//! 2. SQLite: `PRAGMA schema_version` and `user_version` readable, migrations applied;
//! 3. the pages the writer touches first: `meta` (`next_seq`, `data_bytes`), `cursors`, the
//!    rightmost path of `events` and of both its indexes (`max(seq)`, the newest body), and
//!    `max(seq) < next_seq` (otherwise seqs would be reused).
//!
//! A file that fails is *damaged*: [`open_checked`] moves it aside with its `-wal` and
//! `-shm` (`journal.db.damaged-<UTC time>`, `…-wal`, `…-shm`, so SQLite still pairs them for
//! `campusgw journal salvage`), creates a fresh journal and reports what it moved; the
//! caller journals `storage.damaged`. A journal newer than this build
//! ([`JournalError::TooNew`]), one the process may not read or write, or one held by a
//! running gateway ([`JournalError::InUse`]) is refused instead: none of those is damage,
//! and moving such a file aside would hide the events it holds.
//!
//! The full `PRAGMA quick_check`, whose cost grows with the file, runs in the background
//! after start ([`spawn_quick_check`]); a failure there raises `storage.damaged` but never
//! moves the live file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::{JournalError, schema};

/// SQLite file format §1.3: the first 16 bytes of every database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// SQLite file format §1.3: the database header is the first 100 bytes.
const HEADER_LEN: usize = 100;

/// The files of a journal at `db`: the database, its WAL and shared memory, the marker that
/// records a journal was created, and the lock a running gateway holds.
#[derive(Debug, Clone)]
pub(super) struct Files {
    pub db: PathBuf,
    pub marker: PathBuf,
    pub lock: PathBuf,
}

impl Files {
    pub(super) fn of(db: &Path) -> Files {
        Files {
            db: db.to_owned(),
            marker: db.with_extension("id"),
            lock: db.with_extension("lock"),
        }
    }
}

/// A journal file opened for writing and checked.
pub(super) struct Opened {
    pub conn: Connection,
    pub last_seq: u64,
    /// Set when a damaged file was moved aside and this is a fresh journal.
    pub damaged: Option<MovedAside>,
}

/// What start-up found damaged and where it put it.
#[derive(Debug, Clone)]
pub(super) struct MovedAside {
    /// The damaged database under its new name (`None` when there was no file to move).
    pub file: Option<PathBuf>,
    /// Why it counts as damaged.
    pub error: String,
}

enum Verdict {
    Damaged(String),
    Refused(JournalError),
}

impl From<JournalError> for Verdict {
    fn from(e: JournalError) -> Verdict {
        match &e {
            JournalError::Sqlite { source, .. } if is_damage(source) => {
                Verdict::Damaged(e.to_string())
            }
            _ => Verdict::Refused(e),
        }
    }
}

/// SQLite errors that mean the bytes are wrong, as opposed to permissions, a full or
/// read-only disk, or a lock.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Takes the journal's lock: one gateway (or salvage) per journal.
///
/// # Errors
/// [`JournalError::InUse`] when another process holds it.
pub(super) fn lock(files: &Files) -> Result<File, JournalError> {
    if let Some(dir) = files.db.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(&files.db, e))?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&files.lock)
        .map_err(|e| io_err(&files.lock, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::InUse {
            path: files.db.clone(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&files.lock, e)),
    }
}

pub(super) fn io_err(path: &Path, e: std::io::Error) -> JournalError {
    JournalError::Sqlite {
        path: path.to_owned(),
        source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
    }
}

/// Opens the journal for the writer, replacing a damaged file by a fresh journal.
///
/// # Errors
/// [`JournalError`] for a journal that is refused rather than replaced (see the module doc),
/// or when even a fresh journal cannot be created.
pub(super) fn open_checked(files: &Files, sync_off: bool) -> Result<Opened, JournalError> {
    let marked = files.marker.exists();
    let checked = inspect_file(&files.db, marked).and_then(|()| {
        let conn = schema::open_rw(&files.db, sync_off)?;
        let last_seq = probe(&conn, &files.db)?;
        Ok((conn, last_seq))
    });
    match checked {
        Ok((conn, last_seq)) => {
            if !marked {
                write_marker(&files.marker)?;
            }
            Ok(Opened {
                conn,
                last_seq,
                damaged: None,
            })
        }
        Err(Verdict::Refused(e)) => Err(e),
        Err(Verdict::Damaged(error)) => replace(files, error, sync_off),
    }
}

fn replace(files: &Files, error: String, sync_off: bool) -> Result<Opened, JournalError> {
    let file = move_aside(&files.db)?;
    tracing::error!(
        journal = %files.db.display(),
        moved_to = ?file,
        error = %error,
        "storage.damaged: the journal failed its start-up check; moved aside, starting a fresh journal (recover events with `campusgw journal salvage`)"
    );
    metrics::counter!("journal_damaged_at_start_total").increment(1);
    let conn = schema::open_rw(&files.db, sync_off)?;
    let last_seq = probe(&conn, &files.db).map_err(|v| match v {
        Verdict::Damaged(e) => JournalError::Maintenance(format!("fresh journal fails: {e}")),
        Verdict::Refused(e) => e,
    })?;
    write_marker(&files.marker)?;
    Ok(Opened {
        conn,
        last_seq,
        damaged: Some(MovedAside { file, error }),
    })
}

/// The checks on the bare file, before SQLite opens it.
fn inspect_file(db: &Path, marked: bool) -> Result<(), Verdict> {
    let wal = sidecar(db, "-wal");
    let len = match std::fs::metadata(db) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if marked {
                return Err(Verdict::Damaged(format!(
                    "{} is missing, but {} records that a journal was created here",
                    db.display(),
                    db.with_extension("id").display()
                )));
            }
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(Verdict::Damaged(format!(
                    "{} is missing but its WAL {} is not",
                    db.display(),
                    wal.display()
                )));
            }
            return Ok(());
        }
        Err(e) => return Err(Verdict::Refused(io_err(db, e))),
    };
    if len == 0 {
        return if marked {
            Err(Verdict::Damaged(format!(
                "{} is empty (0 bytes), but {} records that a journal was created here",
                db.display(),
                db.with_extension("id").display()
            )))
        } else {
            Ok(())
        };
    }
    let mut header = [0u8; HEADER_LEN];
    let mut f = File::open(db).map_err(|e| Verdict::Refused(io_err(db, e)))?;
    if f.read_exact(&mut header).is_err() {
        return Err(Verdict::Damaged(format!(
            "{len} bytes, shorter than the {HEADER_LEN}-byte SQLite header"
        )));
    }
    // A WAL with frames: the database file may be shorter than its header states without
    // any damage. A checkpoint copies frames in page order, so page 1 (with the newer page
    // count) reaches the file before the pages that make it that long, and a kill (or a
    // power cut) in between leaves exactly that; the WAL still holds every frame and
    // SQLite reads through it. The pages the writer needs are read after opening
    // ([`probe`]) and the background quick_check reads the rest, so real damage is still
    // found; judging the length here would move a sound journal aside.
    let wal_frames = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_HEADER_LEN);
    header_problem(&header, len, wal_frames).map_or(Ok(()), |p| Err(Verdict::Damaged(p)))
}

/// A WAL file's header: a WAL no longer than this holds no frame.
const WAL_HEADER_LEN: u64 = 32;

/// What is wrong with a database header, given the file's length and whether a WAL with
/// frames lies beside it (then the file may be legitimately shorter than the header says).
fn header_problem(h: &[u8; HEADER_LEN], len: u64, wal_frames: bool) -> Option<String> {
    if &h[..16] != MAGIC {
        return Some("not an SQLite database (bad header)".into());
    }
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    // SQLite file format §1.3.2: page size at offset 16, big-endian; 1 means 65536.
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65_536u64,
        n if n.is_power_of_two() && n >= 512 => u64::from(n),
        n => return Some(format!("header states an invalid page size {n}")),
    };
    // §1.3.8: the in-header page count (offset 28) is valid only when the change counter
    // (offset 24) equals the version-valid-for number (offset 92).
    let pages = u64::from(be32(28));
    if be32(24) == be32(92) && pages > 0 {
        let want = pages * page_size;
        if len < want && !wal_frames {
            return Some(format!(
                "truncated: {len} bytes, but the header states {pages} pages of {page_size} bytes ({want} bytes)"
            ));
        }
        // §1.3.9: the first freelist trunk page (offset 32) lies inside the file.
        if u64::from(be32(32)) > pages {
            return Some(format!(
                "header's freelist starts at page {}, past the last page {pages}",
                be32(32)
            ));
        }
    }
    None
}

/// Reads the pages the writer needs first; returns the last committed seq.
fn probe(conn: &Connection, db: &Path) -> Result<u64, Verdict> {
    let e = schema::err(db);
    let _: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(&e)?;
    let last = schema::last_seq(conn, db)?;
    let _: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'data_bytes'", [], |r| {
            r.get(0)
        })
        .map_err(&e)?;
    let _: i64 = conn
        .query_row("SELECT count(*) FROM cursors", [], |r| r.get(0))
        .map_err(&e)?;
    let max: Option<i64> = conn
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
        .map_err(&e)?;
    if let Some(max) = max
        && max as u64 > last
    {
        return Err(Verdict::Damaged(format!(
            "events reach seq {max} but meta.next_seq is {}: seqs would be reused",
            last + 1
        )));
    }
    // The newest row's body (overflow pages included) and the last entries of both indexes.
    for sql in [
        "SELECT length(body) FROM events ORDER BY seq DESC LIMIT 1",
        "SELECT seq FROM events ORDER BY class DESC, seq DESC LIMIT 1",
        "SELECT seq FROM events WHERE live = 1
         ORDER BY device DESC, origin_ref DESC LIMIT 1",
    ] {
        let _: Option<i64> = conn
            .query_row(sql, [], |r| r.get(0))
            .optional()
            .map_err(&e)?;
    }
    Ok(last)
}

/// `<db><suffix>`: SQLite's names for the WAL (`-wal`) and shared memory (`-shm`).
pub(super) fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames the database (if present) and its WAL and shared memory to
/// `<db>.damaged-<UTC time>[-N]{,-wal,-shm}`; returns the database's new name.
fn move_aside(db: &Path) -> Result<Option<PathBuf>, JournalError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = sidecar(db, &format!(".damaged-{stamp}"));
    for n in 2.. {
        if !aside.exists() {
            break;
        }
        aside = sidecar(db, &format!(".damaged-{stamp}-{n}"));
    }
    let mut moved = None;
    for suffix in ["", "-wal", "-shm"] {
        let from = sidecar(db, suffix);
        if !from.exists() {
            continue;
        }
        let to = sidecar(&aside, suffix);
        std::fs::rename(&from, &to).map_err(|e| io_err(&from, e))?;
        if suffix.is_empty() {
            moved = Some(to);
        }
    }
    sync_dir(db);
    Ok(moved)
}

/// Makes renames and creations in the journal's directory durable.
fn sync_dir(db: &Path) {
    if let Some(dir) = db.parent()
        && let Ok(d) = File::open(dir)
        && let Err(e) = d.sync_all()
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the journal directory");
    }
}

/// Writes the marker: a random journal id and the creation time (JSON), durably.
fn write_marker(marker: &Path) -> Result<(), JournalError> {
    let text = serde_json::json!({
        "journal_id": uuid::Uuid::new_v4(),
        "created_at": chrono::Utc::now(),
    })
    .to_string();
    let tmp = marker.with_extension("id.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, marker)
    };
    write().map_err(|e| io_err(marker, e))?;
    sync_dir(marker);
    Ok(())
}

/// The background `PRAGMA quick_check`: started after the writer, interruptible at shutdown.
pub(super) struct QuickCheck {
    interrupt: Option<rusqlite::InterruptHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QuickCheck {
    /// Stops a check still running and waits for its thread.
    pub(super) fn stop(mut self) {
        if let Some(i) = self.interrupt.take() {
            i.interrupt();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `PRAGMA quick_check` on its own read connection; on a failure, calls `raise` with
/// the first problem SQLite reported. Logs the outcome and sets `journal_quick_check_ok`.
pub(super) fn spawn_quick_check(
    db: &Path,
    raise: impl FnOnce(String) + Send + 'static,
) -> QuickCheck {
    let conn = match schema::open_ro(db) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "journal quick_check cannot open the database");
            return QuickCheck {
                interrupt: None,
                thread: None,
            };
        }
    };
    let interrupt = conn.get_interrupt_handle();
    let db = db.to_owned();
    let thread = std::thread::Builder::new()
        .name("journal-quick-check".into())
        .spawn(move || {
            let started = Instant::now();
            match quick_check(&conn) {
                Ok(None) => {
                    metrics::gauge!("journal_quick_check_ok").set(1.0);
                    tracing::info!(journal = %db.display(), seconds = started.elapsed().as_secs_f64(), "journal quick_check ok");
                }
                Ok(Some(problem)) => {
                    metrics::gauge!("journal_quick_check_ok").set(0.0);
                    tracing::error!(journal = %db.display(), problem = %problem, "storage.damaged: journal quick_check failed; the gateway keeps running on it (stop it and salvage)");
                    raise(problem);
                }
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {}
                Err(e) => {
                    metrics::gauge!("journal_quick_check_ok").set(0.0);
                    tracing::error!(journal = %db.display(), error = %e, "storage.damaged: journal quick_check could not run");
                    raise(e.to_string());
                }
            }
            metrics::gauge!("journal_quick_check_seconds").set(started.elapsed().as_secs_f64());
        })
        .ok();
    QuickCheck {
        interrupt: Some(interrupt),
        thread,
    }
}

/// `None` when SQLite answers "ok", else its first line.
fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.busy_timeout(Duration::from_secs(30))?;
    let first: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    Ok((first != "ok").then_some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, pages: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[24..28].copy_from_slice(&7u32.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h[92..96].copy_from_slice(&7u32.to_be_bytes());
        h
    }

    #[test]
    fn a_header_is_judged_by_its_magic_page_size_and_stated_length() {
        assert_eq!(header_problem(&header(4096, 10), 40_960, false), None);
        assert!(
            header_problem(&header(4096, 10), 20_480, false)
                .is_some_and(|p| p.contains("truncated"))
        );
        assert!(header_problem(&header(1000, 10), 40_960, false).is_some());
        let mut garbage = header(4096, 10);
        garbage[0] = b'X';
        assert!(header_problem(&garbage, 40_960, false).is_some());
        // A stale page count (change counter moved on) is not trusted.
        let mut stale = header(4096, 10);
        stale[92] = 1;
        assert_eq!(header_problem(&stale, 4096, false), None);
        // Beside a WAL with frames, a file shorter than its header is a checkpoint in
        // progress, not damage (inspect_file); a bad magic still is.
        assert_eq!(header_problem(&header(4096, 10), 20_480, true), None);
        assert!(header_problem(&garbage, 40_960, true).is_some());
    }
}

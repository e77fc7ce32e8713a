//! The durability contract under `kill -9`: a child process emits events and prints each
//! one it was told is durable; it is killed with SIGKILL at random moments, many times
//! over. After every kill, every event reported durable is in the journal exactly once,
//! seqs are gap-free and strictly increasing, and `PRAGMA integrity_check` is ok. Every
//! fifth round also tears the WAL's tail (random bytes appended, as a write cut by power
//! loss leaves them): recovery must ignore them and lose nothing that was acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

const ROUNDS: usize = 25;

#[test]
fn every_event_reported_durable_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let mut durable: HashMap<String, u64> = HashMap::new();
    let mut rng = rand::rng();
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_campusgw"))
            .args(["journal", "crash-writer", "--producers", "4", "--data-dir"])
            .arg(dir.path())
            .env("CAMPUSGW_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn campusgw");
        let stdout = child.stdout.take().unwrap();
        // Read on a thread so the pipe never fills while we wait to kill.
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut buf = String::new();
            while r.read_line(&mut buf).map(|n| n > 0).unwrap_or(false) {
                if buf.ends_with('\n') {
                    lines.push(buf.trim_end().to_owned());
                }
                buf.clear();
            }
            lines
        });
        // Kill at a random moment once the child has started writing (or after a bound).
        let wait = Duration::from_millis(rng.random_range(20..400));
        let deadline = Instant::now() + Duration::from_secs(20);
        let t0 = Instant::now();
        while t0.elapsed() < wait && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for l in &lines {
            let (seq, id) = l.split_once(' ').expect("`seq id` lines");
            let seq: u64 = seq.parse().unwrap();
            if let Some(prev) = durable.insert(id.to_owned(), seq) {
                assert_eq!(prev, seq, "an event changed seq");
            }
        }
        if round % 5 == 4 {
            tear_wal_tail(&db, &mut rng);
        }
        verify(&db, &durable, round);
    }
    assert!(
        durable.len() > 1000,
        "the test produced too few events to mean anything: {}",
        durable.len()
    );
}

/// Appends 1-8 KiB of random bytes to the WAL, like a frame half-written at power loss.
fn tear_wal_tail(db: &std::path::Path, rng: &mut impl Rng) {
    use std::io::Write;
    let wal = db.with_extension("db-wal");
    let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&wal) else {
        return; // no WAL left behind this round
    };
    let junk: Vec<u8> = (0..rng.random_range(1024..8192))
        .map(|_| rng.random())
        .collect();
    f.write_all(&junk).unwrap();
}

fn verify(db: &std::path::Path, durable: &HashMap<String, u64>, round: usize) {
    // A read-write open runs WAL recovery, as the gateway's restart would.
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "round {round}");
    let mut stmt = conn
        .prepare("SELECT seq, id FROM events ORDER BY seq")
        .unwrap();
    let rows: Vec<(u64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (i, (seq, _)) in rows.iter().enumerate() {
        assert_eq!(
            *seq,
            i as u64 + 1,
            "round {round}: seqs must be gap-free from 1"
        );
    }
    let mut stored: HashMap<String, u64> = HashMap::new();
    for (seq, id) in &rows {
        let id = uuid::Uuid::from_slice(id).unwrap().to_string();
        assert!(
            stored.insert(id, *seq).is_none(),
            "round {round}: an event id is stored twice"
        );
    }
    for (id, seq) in durable {
        assert_eq!(
            stored.get(id),
            Some(seq),
            "round {round}: durable event {id} (seq {seq}) lost"
        );
    }
    let next: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        next as usize,
        rows.len() + 1,
        "round {round}: next_seq agrees with the rows"
    );
}

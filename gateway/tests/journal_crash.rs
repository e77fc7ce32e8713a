//! The durability contract under `kill -9`, with producers that behave like devices.
//!
//! A child process (`campusgw journal crash-writer`, `bench::crash`) emits events, saying
//! on stdout what it sends and what the journal confirmed; it is killed with SIGKILL at
//! random moments, many times over. Like a device, it retransmits after each restart,
//! with the same `origin_ref` and content, every event it was not told was durable. After
//! every kill: every event reported durable is in the journal exactly once with the seq
//! and id first reported, a retransmission the journal had already stored got that event's
//! receipt back, nothing is in the journal that was not sent, seqs are gap-free and
//! `PRAGMA integrity_check` is ok. Every fifth round also tears the WAL's tail (random bytes
//! appended, as a write cut by power loss leaves them): recovery must ignore them and lose
//! nothing that was acknowledged. The random moments come from a seed that is printed;
//! `CAMPUSGW_CRASH_SEED=<n>` replays a run.
//!
//! SIGKILL keeps the page cache, so the kill loop alone cannot see a missing fsync: it
//! would pass with `synchronous=OFF`. The fsync tests below close that gap (see
//! [`syncs_and_batches`]).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 25;

/// What the test knows from the writer's reports, across rounds.
#[derive(Default)]
struct Reports {
    /// Every origin_ref the writer said it sent.
    sent: HashSet<String>,
    /// origin_ref -> (seq, id) of every event reported durable.
    durable: HashMap<String, (u64, String)>,
    /// Retransmissions reported durable.
    retransmitted: usize,
}

impl Reports {
    /// Sent, never reported durable: the device retransmits these.
    fn pending(&self) -> BTreeSet<&String> {
        self.sent
            .iter()
            .filter(|o| !self.durable.contains_key(*o))
            .collect()
    }

    fn absorb(&mut self, lines: &[String], again: &HashSet<String>, seed: u64) {
        for l in lines {
            let mut parts = l.split(' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("sent"), Some(origin), None, None) => {
                    self.sent.insert(origin.to_owned());
                }
                (Some("durable"), Some(seq), Some(id), Some(origin)) => {
                    let now = (seq.parse().unwrap(), id.to_owned());
                    assert!(
                        self.sent.contains(origin),
                        "seed {seed}: {origin} durable, never sent"
                    );
                    if again.contains(origin) {
                        self.retransmitted += 1;
                    }
                    if let Some(before) = self.durable.insert(origin.to_owned(), now.clone()) {
                        assert_eq!(
                            before, now,
                            "seed {seed}: {origin} reported twice, differently"
                        );
                    }
                }
                _ => panic!("seed {seed}: unexpected line {l:?}"),
            }
        }
    }
}

fn seed() -> u64 {
    let seed = match std::env::var("CAMPUSGW_CRASH_SEED") {
        Ok(s) => s.parse().expect("CAMPUSGW_CRASH_SEED is a u64"),
        Err(_) => rand::rng().random(),
    };
    eprintln!("crash test seed {seed} (replay with CAMPUSGW_CRASH_SEED={seed})");
    seed
}

/// Reads the child's stdout on a thread, so the pipe never fills while we wait to kill;
/// only whole lines count (the kill can cut the last one).
fn read_lines(stdout: std::process::ChildStdout) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
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
    })
}

#[test]
fn every_event_reported_durable_survives_sigkill_exactly_once_and_retransmissions_are_recognised() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let retransmit = dir.path().join("retransmit.txt");
    let mut reports = Reports::default();
    for round in 0..ROUNDS {
        let again: HashSet<String> = reports.pending().into_iter().cloned().collect();
        let list: Vec<&str> = again.iter().map(String::as_str).collect();
        std::fs::write(&retransmit, list.join("\n")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_campusgw"))
            .args(["journal", "crash-writer", "--producers", "4", "--data-dir"])
            .arg(dir.path())
            .arg("--retransmit")
            .arg(&retransmit)
            .env("CAMPUSGW_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn campusgw");
        let reader = read_lines(child.stdout.take().unwrap());
        // Kill at a random moment (bounded, never a synchronisation: any moment will do).
        let wait = Duration::from_millis(rng.random_range(20..400));
        let t0 = Instant::now();
        while t0.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reports.absorb(&reader.join().unwrap(), &again, seed);
        if round % 5 == 4 {
            tear_wal_tail(&db, &mut rng);
        }
        verify(&db, &reports, round, seed);
    }
    assert!(
        reports.durable.len() > 1000,
        "seed {seed}: the test produced too few events to mean anything: {}",
        reports.durable.len()
    );
    assert!(
        reports.retransmitted > 0,
        "seed {seed}: no retransmission was ever confirmed; the test retransmitted nothing"
    );
    eprintln!(
        "{} events durable, {} retransmissions confirmed, {} still pending",
        reports.durable.len(),
        reports.retransmitted,
        reports.pending().len()
    );
}

/// Appends 1-8 KiB of random bytes to the WAL, like a frame half-written at power loss.
fn tear_wal_tail(db: &Path, rng: &mut impl Rng) {
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

fn verify(db: &Path, reports: &Reports, round: usize, seed: u64) {
    let at = format!("seed {seed} round {round}");
    // A read-write open runs WAL recovery, as the gateway's restart would.
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{at}");
    let mut stmt = conn
        .prepare("SELECT seq, id, origin_ref FROM events ORDER BY seq")
        .unwrap();
    let rows: Vec<(u64, Vec<u8>, String)> = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (i, (seq, _, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "{at}: seqs must be gap-free from 1");
    }
    let mut stored: HashMap<&str, (u64, String)> = HashMap::new();
    for (seq, id, origin) in &rows {
        let id = uuid::Uuid::from_slice(id).unwrap().to_string();
        assert!(
            reports.sent.contains(origin),
            "{at}: {origin} is in the journal but was never sent"
        );
        assert!(
            stored.insert(origin, (*seq, id)).is_none(),
            "{at}: {origin} is stored twice (a retransmission was not recognised)"
        );
    }
    for (origin, receipt) in &reports.durable {
        assert_eq!(
            stored.get(origin.as_str()),
            Some(receipt),
            "{at}: durable event {origin} (seq {}) lost or changed",
            receipt.0
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
        "{at}: next_seq agrees with the rows"
    );
}

/// What the system calls of a bounded crash-writer run show about its acknowledgements.
#[derive(Debug)]
struct Audit {
    /// Transactions the journal reports committed (`JournalStatus.batches`).
    batches: u64,
    /// Completed fsync/fdatasync calls on the WAL.
    wal_syncs: usize,
    /// Events acknowledged (`durable` written to stdout).
    acks: usize,
    /// Events acknowledged with no WAL sync both started after they were sent and
    /// completed before their acknowledgement was written.
    unsynced: Vec<String>,
}

/// Runs a bounded crash writer (2,000 durable events) under `strace -f -y -e
/// trace=fsync,fdatasync,write` and audits the order of its system calls.
///
/// How this detects a missing fsync: SIGKILL leaves the page cache to the kernel, so a
/// kill loop passes even if nothing is ever synced (`synchronous=OFF`). strace records, in
/// order, when the writer says `sent <ref>` (before handing the event to the journal), each
/// fsync/fdatasync of the WAL file (start and completion; SQLite in WAL mode with
/// `synchronous=FULL` syncs the WAL at every commit, which is what makes the commit
/// durable) and when `durable <seq> <id> <ref>` is written. An acknowledgement is proper
/// only if a WAL sync started after the event was sent and completed before the
/// acknowledgement: the commit that holds it reached the disk. A writer that acknowledges
/// before syncing, or never syncs, fails. Also, each committed batch needs its own sync:
/// at least as many WAL syncs as batches. [`a_writer_that_commits_without_fsync_fails_the_fsync_check`]
/// shows the audit catches such a writer (the crash writer's test-only
/// `CAMPUSGW_UNSAFE_SYNC_OFF_FOR_TEST`).
fn audit_fsyncs(sync_off: bool) -> Audit {
    let strace = which("strace").unwrap_or_else(|| {
        panic!("strace is required for the fsync check and is not on PATH (the test script installs it: apt-get install strace)")
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.txt");
    let mut cmd = Command::new(strace);
    cmd.args([
        "-f",
        "-y",
        "-s",
        "100000",
        "-e",
        "trace=fsync,fdatasync,write",
        "-o",
    ])
    .arg(&log)
    .arg(env!("CARGO_BIN_EXE_campusgw"))
    .args([
        "journal",
        "crash-writer",
        "--producers",
        "4",
        "--events",
        "2000",
        "--data-dir",
    ])
    .arg(dir.path())
    .env("CAMPUSGW_LOG", "error")
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap());
    if sync_off {
        cmd.env("CAMPUSGW_UNSAFE_SYNC_OFF_FOR_TEST", "1");
    }
    let mut child = cmd.spawn().expect("spawn strace");
    let reader = read_lines(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bounded crash writer did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = reader.join().unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    assert!(
        status.success(),
        "strace or the crash writer failed ({status}): {stderr}"
    );
    let batches: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("batches "))
        .unwrap_or_else(|| panic!("the writer reports its batches; stderr: {stderr}"))
        .parse()
        .unwrap();
    let trace = std::fs::read_to_string(&log).unwrap();
    let calls = calls(&trace);
    let syncs: Vec<(usize, usize)> = calls
        .iter()
        .filter(|c| c.name.ends_with("sync") && c.args.contains("-wal>") && c.ok)
        .map(|c| (c.start, c.end))
        .collect();
    // min_end[i]: the earliest completion among syncs i.. (syncs are in start order).
    let mut min_end = vec![usize::MAX; syncs.len() + 1];
    for i in (0..syncs.len()).rev() {
        min_end[i] = min_end[i + 1].min(syncs[i].1);
    }
    let mut sent_at: HashMap<String, usize> = HashMap::new();
    let (mut acks, mut unsynced) = (0, Vec::new());
    for c in calls
        .iter()
        .filter(|c| c.name == "write" && c.args.starts_with("1<"))
    {
        for line in c.args.split("\\n") {
            // The first piece starts `1<pipe:[..]>, "`; the last one is `", <len>`.
            let text = line.rsplit('"').next().unwrap_or(line);
            let words: Vec<&str> = text.split(' ').collect();
            match words.as_slice() {
                ["sent", origin] => {
                    sent_at.insert((*origin).to_owned(), c.end);
                }
                ["durable", _, _, origin] => {
                    acks += 1;
                    let sent = sent_at[*origin];
                    let first_after = syncs.partition_point(|(start, _)| *start <= sent);
                    if min_end[first_after] >= c.start {
                        unsynced.push((*origin).to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    let audit = Audit {
        batches,
        wal_syncs: syncs.len(),
        acks,
        unsynced,
    };
    eprintln!(
        "sync_off={sync_off}: {} acks, {} without a sync between send and ack; {} WAL syncs for {} batches",
        audit.acks,
        audit.unsynced.len(),
        audit.wal_syncs,
        audit.batches
    );
    audit
}

/// One system call in an `strace -f` log: its name, its arguments, the log lines where it
/// started and completed, and whether it returned 0 or more.
struct Call {
    name: String,
    args: String,
    start: usize,
    end: usize,
    ok: bool,
}

/// Pairs `<unfinished ...>` lines with their `<... resumed>` lines, per thread.
fn calls(trace: &str) -> Vec<Call> {
    let mut open: HashMap<&str, (String, String, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, args, start)) = open.remove(pid) else {
                continue;
            };
            let ok = resumed
                .rsplit_once("= ")
                .is_some_and(|(_, r)| !r.starts_with('-'));
            out.push(Call {
                name,
                args,
                start,
                end: i,
                ok,
            });
        } else if let Some((name, args)) = rest.split_once('(') {
            if let Some(args) = args.strip_suffix(" <unfinished ...>") {
                open.insert(pid, (name.to_owned(), args.to_owned(), i));
            } else if let Some((args, ret)) = args.rsplit_once(") = ") {
                let ok = !ret.starts_with('-');
                out.push(Call {
                    name: name.to_owned(),
                    args: args.to_owned(),
                    start: i,
                    end: i,
                    ok,
                });
            }
        }
    }
    out.sort_by_key(|c| c.start);
    out
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[test]
fn every_acknowledgement_follows_a_completed_fsync_of_the_commit_that_holds_it() {
    let a = audit_fsyncs(false);
    assert!(a.batches > 0 && a.acks >= 2000, "{a:?}");
    assert!(
        a.unsynced.is_empty(),
        "{} of {} events acknowledged with no completed WAL fsync since they were sent, e.g. {:?}",
        a.unsynced.len(),
        a.acks,
        &a.unsynced[..a.unsynced.len().min(3)]
    );
    assert!(
        a.wal_syncs as u64 >= a.batches,
        "{} WAL syncs for {} committed batches: some batch was acknowledged without an fsync",
        a.wal_syncs,
        a.batches
    );
}

#[test]
fn a_writer_that_commits_without_fsync_fails_the_fsync_check() {
    let a = audit_fsyncs(true);
    assert!(a.batches > 0 && a.acks >= 2000, "{a:?}");
    assert!(
        !a.unsynced.is_empty() && (a.wal_syncs as u64) < a.batches,
        "the audit cannot tell a writer without fsync: {} of {} acks unsynced, {} WAL syncs for {} batches",
        a.unsynced.len(),
        a.acks,
        a.wal_syncs,
        a.batches
    );
}

//! Start-up never stops alarm reception (issue 7, item 5): a damaged journal (garbage, a
//! 0-byte file where a journal existed, a truncated file) is moved aside, a fresh journal
//! starts with a `storage.damaged` event, the gateway serves; `campusgw journal salvage`
//! recovers the readable events of the moved file with their ids. Against the real binary
//! where the behaviour is the process's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use campusgw::journal::{Journal, JournalError, JournalOptions};
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

mod cli_support;
use cli_support::{campusgw, export_text};

const T: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `campusgw run` with no devices on `data`.
struct Gw {
    child: Child,
    port: u16,
}

impl Gw {
    fn start(dir: &Path, data: &Path) -> Gw {
        let port = free_port();
        let cfg = dir.join("gw.toml");
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:{port}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let child = campusgw()
            .args(["run", "--config"])
            .arg(&cfg)
            .spawn()
            .unwrap();
        Gw { child, port }
    }

    /// Waits for /healthz to answer; returns its status code and body.
    fn healthz(&mut self) -> (u16, serde_json::Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + T;
            loop {
                if let Ok(r) = reqwest::get(&url).await {
                    return (r.status().as_u16(), r.json().await.unwrap());
                }
                assert!(
                    self.child.try_wait().unwrap().is_none(),
                    "campusgw exited before serving /healthz"
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "healthz never answered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    fn stop(&mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + T;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "no stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    }
}

fn export(data: &Path) -> Vec<serde_json::Value> {
    export_text(data)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn damaged_aside(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("journal.db.damaged-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect();
    v.sort();
    v
}

impl Drop for Gw {
    /// Kills the child if the test fails before it stopped.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the gateway on `data`, checks it serves and moved one file aside, stops it, and
/// returns the moved file and the `storage.damaged` event of the new journal.
fn start_on_damaged(dir: &Path, data: &Path) -> (PathBuf, serde_json::Value) {
    let mut gw = Gw::start(dir, data);
    let (code, body) = gw.healthz();
    assert_eq!(code, 200, "{body}");
    assert!(body["journal"]["storage_damaged"].is_string(), "{body}");
    gw.stop();
    let aside = damaged_aside(data);
    assert_eq!(aside.len(), 1, "{aside:?}");
    let events = export(data);
    let damaged: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "storage.damaged")
        .collect();
    assert_eq!(damaged.len(), 1, "{events:?}");
    let e = damaged[0].clone();
    assert_eq!(e["class"], "security");
    assert_eq!(e["seq"], 1, "the fresh journal starts with it");
    assert_eq!(
        e["payload"]["file"].as_str().unwrap(),
        aside[0].display().to_string()
    );
    assert!(e["payload"]["error"].as_str().unwrap().len() > 3, "{e}");
    (aside[0].clone(), e)
}

fn ev(n: usize) -> Event {
    let class = if n.is_multiple_of(3) {
        Class::LifeSafety
    } else {
        Class::Telemetry
    };
    let kind = if n.is_multiple_of(3) {
        "fire.alarm"
    } else {
        "sensor.reading"
    };
    Event::stamp(
        NewEvent::new(Kind::new(kind).unwrap(), class)
            .payload(serde_json::json!({ "n": n, "pad": "p".repeat(150) })),
        &DeviceId::new("panel").unwrap(),
        "test",
        &Location::default(),
    )
}

/// A real journal in `data` with `n` events, closed cleanly; returns their ids in order.
fn real_journal(data: &Path, n: usize) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (j, w) = Journal::open(JournalOptions::new(data.join("journal.db"))).unwrap();
        let mut ids = Vec::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let events: Vec<Event> = chunk.iter().map(|i| ev(*i)).collect();
            ids.extend(events.iter().map(|e| e.id.to_string()));
            j.append(events).await.unwrap();
        }
        j.close().await;
        tokio::task::spawn_blocking(move || w.join()).await.unwrap();
        ids
    })
}

#[test]
fn a_garbage_journal_at_start_is_moved_aside_and_the_gateway_runs_with_storage_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(data.join("journal.db"), &garbage).unwrap();
    let (aside, e) = start_on_damaged(dir.path(), &data);
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        garbage,
        "moved, not altered"
    );
    assert_eq!(e["payload"]["cause"], "start_check");
    assert!(data.join("journal.id").is_file());
}

#[test]
fn a_zero_byte_journal_where_the_marker_says_one_existed_is_damage_not_a_new_journal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    real_journal(&data, 10);
    let marker = std::fs::read_to_string(data.join("journal.id")).unwrap();
    std::fs::write(data.join("journal.db"), b"").unwrap();
    let (aside, e) = start_on_damaged(dir.path(), &data);
    assert_eq!(std::fs::metadata(&aside).unwrap().len(), 0);
    assert!(
        e["payload"]["error"].as_str().unwrap().contains("empty"),
        "{e}"
    );
    let fresh = std::fs::read_to_string(data.join("journal.id")).unwrap();
    assert_ne!(marker, fresh, "the fresh journal has its own id");
}

#[test]
fn a_missing_journal_where_the_marker_says_one_existed_is_damage_in_process() {
    let dir = tempfile::tempdir().unwrap();
    real_journal(dir.path(), 3);
    std::fs::remove_file(dir.path().join("journal.db")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (j, w) = Journal::open(JournalOptions::new(dir.path().join("journal.db"))).unwrap();
        assert!(j.status().damaged().unwrap().contains("missing"));
        tokio::time::timeout(T, async {
            while *j.committed_seq().borrow() < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let first = j.reader().unwrap().after(0, None, 10).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].kind.as_str(), "storage.damaged");
        assert_eq!(first[0].payload["file"], serde_json::Value::Null);
        j.close().await;
        tokio::task::spawn_blocking(move || w.join()).await.unwrap();
    });
}

#[test]
fn a_journal_newer_than_this_build_is_refused_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    real_journal(dir.path(), 3);
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let r = Journal::open(JournalOptions::new(&db));
    assert!(
        matches!(r, Err(JournalError::TooNew { found: 999, .. })),
        "{:?}",
        r.err()
    );
    assert!(damaged_aside(dir.path()).is_empty());
}

#[test]
fn a_truncated_journal_is_moved_aside_and_salvage_recovers_its_readable_events_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ids = real_journal(&data, 4000);
    let db = data.join("journal.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let (aside, e) = start_on_damaged(dir.path(), &data);
    assert!(
        e["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{e}"
    );

    let salvage = || {
        let out = campusgw()
            .args(["journal", "salvage"])
            .arg(&aside)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = salvage();
    let read = report["read"].as_u64().unwrap();
    assert!(read > 100 && read < 4000, "{report}");
    assert_eq!(report["copied"], read, "{report}");
    assert_eq!(report["skipped"], 0, "{report}");

    let events = export(&data);
    let recovered: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] != "storage.damaged")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovered.len() as u64, read);
    // Original ids, in their original order, with new seqs after the storage.damaged event.
    let pos: Vec<usize> = recovered
        .iter()
        .map(|id| ids.iter().position(|o| o == id).expect("an original id"))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "original order kept");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=read + 1).collect::<Vec<_>>());

    // A second run copies nothing: every id is already there.
    let again = salvage();
    assert_eq!(again["copied"], 0, "{again}");
    assert_eq!(again["skipped"], read, "{again}");
}

#[test]
fn salvage_refuses_while_a_gateway_holds_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (j, w) = Journal::open(JournalOptions::new(dir.path().join("journal.db"))).unwrap();
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"").unwrap();
    let r = campusgw::journal::salvage::salvage(&other, dir.path());
    assert!(
        r.as_ref().is_err_and(|e| e.to_string().contains("in use")),
        "{r:?}"
    );
    rt.block_on(j.close());
    w.join();
}

#[test]
fn damage_only_the_background_quick_check_sees_raises_storage_damaged_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    real_journal(dir.path(), 4000);
    // Scribble over one page in the middle of the file: not on any path the cheap check
    // reads (header, meta, cursors, the newest rows), but part of the events B-tree.
    let bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    let mut damaged = bytes.clone();
    let at = pages / 2 * 4096;
    for (i, b) in damaged[at..at + 4096].iter_mut().enumerate() {
        *b = (i * 31 % 256) as u8;
    }
    std::fs::write(&db, &damaged).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (j, w) = Journal::open(JournalOptions::new(&db)).unwrap();
        assert!(
            damaged_aside(dir.path()).is_empty(),
            "the cheap check passed"
        );
        tokio::time::timeout(T, async {
            while j.status().damaged().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("quick_check reports the damage");
        assert!(j.status().damaged().unwrap().starts_with("quick_check"));
        let last = 4000;
        tokio::time::timeout(T, async {
            while *j.committed_seq().borrow() == last {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("storage.damaged journaled");
        let newest = j.reader().unwrap().get(last + 1).unwrap().unwrap();
        assert_eq!(newest.kind.as_str(), "storage.damaged");
        assert_eq!(newest.class, Class::Security);
        assert_eq!(newest.payload["cause"], "quick_check");
        assert!(damaged_aside(dir.path()).is_empty(), "the live file stays");
        j.close().await;
        tokio::task::spawn_blocking(move || w.join()).await.unwrap();
    });
}

/// The files a SIGKILL leaves when it lands inside a WAL checkpoint: SQLite copies WAL
/// frames into the database in page order, so page 1, whose header states the newer page
/// count, is written before the pages that make the file that long. The file is then
/// shorter than its header says, yet nothing is damaged: the WAL still holds every frame
/// (a checkpoint rewinds it only once complete) and SQLite reads through it. Such a
/// journal must open as it is, every committed event in place; moving it aside as
/// "truncated" would lose every alarm it holds from the live journal.
#[test]
fn a_journal_killed_inside_a_checkpoint_opens_with_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    real_journal(&a, 2000);
    let db = a.join("journal.db");
    let pages_before = std::fs::metadata(&db).unwrap().len();
    // More events, committed to the WAL only: the writer's connection never checkpoints,
    // and this one stays open while its files are copied, as a killed process leaves them.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch(
        "BEGIN;
         INSERT INTO events (seq, id, class, kind, device, origin_ref, received_at, body)
           SELECT seq + 2000, id, class, kind, device, origin_ref, received_at, body FROM events;
         UPDATE meta SET value = 4001 WHERE key = 'next_seq';
         COMMIT;",
    )
    .unwrap();
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    for entry in std::fs::read_dir(&a).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, b.join(p.file_name().unwrap())).unwrap();
    }
    drop(conn);
    // The checkpoint's first write: the newest page 1 from the WAL over the database's.
    let wal = std::fs::read(b.join("journal.db-wal")).unwrap();
    let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let frame = 24 + page_size;
    let page1 = (0..(wal.len() - 32) / frame)
        .map(|i| 32 + i * frame)
        .rfind(|at| u32::from_be_bytes(wal[*at..*at + 4].try_into().unwrap()) == 1)
        .expect("page 1 in the WAL");
    let mut file = std::fs::read(b.join("journal.db")).unwrap();
    file[..page_size].copy_from_slice(&wal[page1 + 24..page1 + 24 + page_size]);
    std::fs::write(b.join("journal.db"), &file).unwrap();
    let stated = u64::from(u32::from_be_bytes(file[28..32].try_into().unwrap()));
    assert!(
        stated * page_size as u64 > pages_before,
        "the header now states more pages ({stated}) than the file holds ({pages_before} bytes)"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (j, w) = Journal::open(JournalOptions::new(b.join("journal.db"))).unwrap();
        assert_eq!(j.status().damaged(), None, "not damage");
        let events = j.reader().unwrap().after(0, None, 5000).unwrap();
        assert_eq!(events.len(), 4000);
        assert_eq!(events.last().unwrap().seq, 4000);
        j.close().await;
        tokio::task::spawn_blocking(move || w.join()).await.unwrap();
    });
    assert!(damaged_aside(&b).is_empty(), "nothing moved aside");
}

//! Nothing dies silently (issue 7, item 4, journal writer half): a dead writer thread makes
//! appends fail (drivers withhold confirms), `/healthz` answer 503 with the reason, and the
//! process exit non-zero so the service manager restarts it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;
use std::time::Duration;

use campusgw::journal::{Journal, JournalOptions};
use campusgw_sdk::driver::EmitError;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

const T: Duration = Duration::from_secs(30);

fn alarm() -> Event {
    Event::stamp(
        NewEvent::new(Kind::new("fire.alarm").unwrap(), Class::LifeSafety),
        &DeviceId::new("panel").unwrap(),
        "test",
        &Location::default(),
    )
}

#[tokio::test]
async fn after_the_writer_thread_panics_appends_fail_closed_and_the_status_names_the_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = Journal::open(JournalOptions::new(dir.path().join("journal.db"))).unwrap();
    j.append(vec![alarm()]).await.unwrap();
    assert!(j.status().writer_failure().is_none());
    j.kill_writer_for_test().await;
    tokio::time::timeout(T, j.writer_stopped()).await.unwrap();
    let reason = j.status().writer_failure().expect("a failure is recorded");
    assert!(reason.contains("panicked"), "{reason}");
    assert!(
        !j.status()
            .writer_alive
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    let r = tokio::time::timeout(T, j.append(vec![alarm()]))
        .await
        .unwrap();
    assert!(matches!(r, Err(EmitError::Closed)), "{r:?}");
    w.join();
}

#[tokio::test]
async fn a_clean_close_is_not_a_writer_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = Journal::open(JournalOptions::new(dir.path().join("journal.db"))).unwrap();
    j.close().await;
    tokio::time::timeout(T, j.writer_stopped()).await.unwrap();
    assert!(j.status().writer_failure().is_none());
    w.join();
}

#[test]
fn a_killed_writer_turns_healthz_503_and_campusgw_run_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:{port}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_campusgw"))
            .env("CAMPUSGW_LOG", "warn")
            // Killed 1 s after start; /healthz stays up 10 s after that so the poll below sees it.
            .env("CAMPUSGW_FAULT", "writer_panic_after=1s,failure_linger=10s")
            .args(["run", "--config"])
            .arg(&cfg)
            .spawn()
            .unwrap(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let failing: serde_json::Value = rt.block_on(async {
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().as_u16() == 503
            {
                return r.json().await.unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "healthz never turned 503"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(failing["status"], "failing", "{failing}");
    assert!(
        failing["reason"].as_str().unwrap().contains("panicked"),
        "{failing}"
    );
    assert_eq!(failing["journal"]["writer_alive"], false);
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "campusgw did not exit after its writer died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(campusgw::app::EXIT_GATEWAY_FAILED),
        "{status:?}"
    );
}

/// Kills the child if the test fails before it exited.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A failed WAL fsync (journal/durable.rs): the commit is in the WAL but not known to be on
/// disk, so it is never acknowledged, never shown to the gateway's readers (an uplink must
/// not forward what a power cut could take back), and the writer stops loudly.
#[tokio::test]
async fn a_failed_wal_sync_is_never_acknowledged_nor_read_and_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let (j, w) = Journal::open(JournalOptions::new(path.clone())).unwrap();
    let first = j.append(vec![alarm()]).await.unwrap();
    j.fail_next_sync_for_test().await;
    let r = tokio::time::timeout(T, j.append(vec![alarm()]))
        .await
        .unwrap();
    assert!(
        matches!(&r, Err(EmitError::Storage(why)) if why.contains("fsync")),
        "{r:?}"
    );
    let seen: Vec<u64> = j
        .reader()
        .unwrap()
        .after(0, None, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seen, vec![first[0].seq], "only the durable event is read");
    assert_eq!(j.reader().unwrap().last_seq().unwrap(), first[0].seq);
    // The row itself was committed (a bare file reader, as after a restart, sees it): the
    // gateway's reader was bounded, not lucky.
    let committed = campusgw::journal::JournalReader::open(&path)
        .unwrap()
        .after(0, None, 10)
        .unwrap()
        .len();
    assert_eq!(committed, 2);
    tokio::time::timeout(T, j.writer_stopped()).await.unwrap();
    let reason = j.status().writer_failure().expect("a failure is recorded");
    assert!(reason.contains("fsync"), "{reason}");
    w.join();
}

//! A SIGKILL loop during a lunch rush: the real `campusgw` binary runs a canteen device,
//! simulated terminals sell without pause (resending the same request through every
//! outage, sending some sales twice), and the gateway is killed with SIGKILL at random
//! moments, many times. Afterwards: every sale a terminal was told `approved` is in the
//! journal exactly once, with the `record_id` it was told; nothing is in the journal that
//! was not approved; the ledger's totals and balances reconcile to the cent. The random
//! moments come from a printed seed; `CAMPUSGW_CRASH_SEED=<n>` replays a run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_canteen::ledger::Ledger;
use campusgw_canteen::sim::{self, SimTerminal, Sold};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 12;
const TERMINALS: u32 = 6;
const MEALS: u64 = 150;
const CARDS: usize = 30;
const PRICE: i64 = 330;
const BALANCE: i64 = 100_000;

fn config(dir: &Path, port: u16) -> String {
    let mut s = format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[[device]]\nid = \"canteen\"\ndriver = \"canteen\"\nlisten = \"127.0.0.1:{port}\"\ncard_list = \"{}\"\n",
        dir.display(),
        dir.join("cards.json").display()
    );
    for i in 1..=TERMINALS {
        s += &format!(
            "[[device.terminals]]\nid = \"t{i:02}\"\ntoken_sha256 = \"{}\"\n",
            sim::token_hash(&format!("token-{i}"))
        );
    }
    s
}

fn start(cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("campusgw starts")
}

fn seed() -> u64 {
    std::env::var("CAMPUSGW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_approved_sale_survives_sigkill_exactly_once_and_the_totals_reconcile() {
    let seed = seed();
    eprintln!("canteen kill loop seed {seed} (CAMPUSGW_CRASH_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let cards = campusgw_canteen::sync::ChangeSet {
        cursor: None,
        changes: sim::card_list(CARDS, BALANCE),
    };
    std::fs::write(
        dir.path().join("cards.json"),
        serde_json::to_vec(&cards).unwrap(),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, config(dir.path(), port)).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // The rush runs across every kill: terminals resend until answered.
    let answers: Arc<Mutex<Vec<(String, Sold)>>> = Arc::default();
    let finished = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut rush = Vec::new();
    for i in 1..=TERMINALS {
        let answers = answers.clone();
        let finished = finished.clone();
        // A cashier's pace: 20-100 ms between sales, so the rush spans many kills.
        let pace: Vec<u64> = (0..MEALS).map(|_| rng.random_range(20..100)).collect();
        let mut t = SimTerminal::new(addr, &format!("t{i:02}"), &format!("token-{i}"));
        t.duplicate_every = 5;
        t.give_up_after = Duration::from_secs(600);
        rush.push(tokio::spawn(async move {
            let cards = sim::cards(CARDS);
            for m in 0..MEALS {
                let card = &cards[(u64::from(i) * 7 + m) as usize % CARDS];
                let sold = t
                    .sell(card, PRICE)
                    .await
                    .expect("every sale answered in the end");
                answers.lock().unwrap().push((t.id.clone(), sold));
                tokio::time::sleep(Duration::from_millis(pace[m as usize])).await;
            }
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // Kill at random moments until the rush is over, at least ROUNDS times; count the kills
    // that landed while terminals were still selling.
    let mut child = start(&cfg);
    let (mut round, mut mid_rush) = (0, 0);
    while round < ROUNDS || finished.load(std::sync::atomic::Ordering::SeqCst) < TERMINALS {
        assert!(round < 500, "the rush does not end (seed {seed})");
        let ms = rng.random_range(200..1200);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let selling = finished.load(std::sync::atomic::Ordering::SeqCst) < TERMINALS;
        mid_rush += usize::from(selling);
        eprintln!(
            "round {round}: killed after {ms} ms, {} answers so far{}",
            answers.lock().unwrap().len(),
            if selling { ", mid-rush" } else { "" }
        );
        child = start(&cfg);
        round += 1;
    }
    assert!(
        mid_rush >= 8,
        "only {mid_rush} kills landed mid-rush (seed {seed})"
    );
    for r in rush {
        tokio::time::timeout(Duration::from_secs(600), r)
            .await
            .expect("rush ends")
            .unwrap();
    }
    // Let the gateway finish journaling, then stop it for good.
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers.len(), (u64::from(TERMINALS) * MEALS) as usize);
    assert!(
        answers.iter().all(|(_, s)| s.answer.approved()),
        "balances cover every meal"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["journal", "export", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut journal: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["kind"] == "canteen.sale" {
            let key = format!(
                "{}:{}",
                e["payload"]["terminal"].as_str().unwrap(),
                e["payload"]["txn"]
            );
            journal.entry(key).or_default().push(e);
        }
    }
    for (terminal, s) in &answers {
        let key = format!("{terminal}:{}", s.answer.txn);
        let found = journal.get(&key).map_or(0, Vec::len);
        assert_eq!(
            found, 1,
            "{key} approved: in the journal exactly once (seed {seed})"
        );
        assert_eq!(
            journal[&key][0]["id"], s.answer.record_id,
            "{key}: the record told"
        );
    }
    assert_eq!(
        journal.len(),
        answers.len(),
        "nothing journaled that was not approved (seed {seed})"
    );
    let journal_cents: i64 = journal
        .values()
        .map(|v| v[0]["payload"]["amount_cents"].as_i64().unwrap())
        .sum();
    let told_cents = answers.len() as i64 * PRICE;
    assert_eq!(journal_cents, told_cents);
    let l = Ledger::open(&dir.path().join("canteen-canteen.db")).unwrap();
    let mut days: Vec<String> = journal
        .values()
        .map(|v| v[0]["payload"]["day"].as_str().unwrap().to_owned())
        .collect();
    days.sort();
    days.dedup();
    let (mut n, mut cents, mut unjournaled) = (0, 0, 0);
    for d in &days {
        let r = l.report(d).unwrap();
        n += r.approved;
        cents += r.approved_cents;
        unjournaled += r.unjournaled;
    }
    assert_eq!(
        (n as usize, cents),
        (answers.len(), told_cents),
        "ledger reconciles"
    );
    assert_eq!(unjournaled, 0);
    let balances: i64 = (1..=CARDS)
        .map(|i| l.balance(&format!("S{i:05}")).unwrap().unwrap())
        .sum();
    assert_eq!(balances, CARDS as i64 * BALANCE - told_cents, "to the cent");
}

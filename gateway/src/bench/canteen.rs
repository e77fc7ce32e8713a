//! `campusgw bench canteen`: a lunch rush against the canteen driver with the gateway as its
//! own process (issue 17's figures): `terminals` simulated terminals sell `meals` meals in
//! all, spread evenly over `window` (a real rush: 2,000 meals in 10 minutes across 20
//! terminals; `--window 0s` sells as fast as answers come), against a card list of `cards`
//! cards loaded at start.
//!
//! - **Approval latency**: per sale, from the terminal's request to its `approved` answer
//!   (a fresh TCP connection per request, as the simulator sends them): the decision in the
//!   ledger (one SQLite transaction) and the `canteen.sale` commit to the journal (fsync'd)
//!   are inside it. p50 / p99 / max.
//! - **RSS**: the child's `VmRSS` once the card list is loaded, and after the rush.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use campusgw_canteen::sim::{self, SimTerminal};

use super::{BenchDir, quantile};

/// What `campusgw bench canteen` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Simulated terminals.
    pub terminals: u32,
    /// Meals in all.
    pub meals: u64,
    /// Cards in the synced list.
    pub cards: usize,
    /// The rush's length (zero: as fast as possible).
    pub window: Duration,
    /// Directory for the child's data (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct CanteenResult {
    bench: &'static str,
    terminals: u32,
    meals: u64,
    cards: usize,
    window_secs: f64,
    elapsed_secs: f64,
    approved: usize,
    approval_p50_ms: f64,
    approval_p99_ms: f64,
    approval_max_ms: f64,
    rss_cards_loaded_mib: f64,
    rss_after_rush_mib: f64,
}

fn config_text(dir: &std::path::Path, port: u16, terminals: u32) -> String {
    let mut s = format!(
        "[gateway]\nid = \"bench-canteen\"\nname = \"Canteen bench\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[[device]]\nid = \"canteen\"\ndriver = \"canteen\"\nlisten = \"127.0.0.1:{port}\"\ncard_list = \"{}\"\n",
        dir.display(),
        dir.join("cards.json").display()
    );
    for i in 1..=terminals {
        s += &format!(
            "[[device.terminals]]\nid = \"t{i:02}\"\ntoken_sha256 = \"{}\"\n",
            sim::token_hash(&format!("bench-token-{i}"))
        );
    }
    s
}

/// Runs the benchmark; prints one JSON line.
///
/// # Errors
/// Start-up failures, a child that exits, or a sale that is not approved.
pub async fn run(o: BenchOptions) -> anyhow::Result<i32> {
    anyhow::ensure!(
        o.terminals >= 1 && o.meals >= 1 && o.cards >= 1,
        "--terminals, --meals and --cards must be at least 1"
    );
    let dir = BenchDir::create(o.data_dir.clone(), "canteen")?;
    let cards = campusgw_canteen::sync::ChangeSet {
        cursor: None,
        changes: sim::card_list(o.cards, 1_000_000),
    };
    std::fs::write(dir.path().join("cards.json"), serde_json::to_vec(&cards)?)?;
    let port = super::free_port()?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(dir.path(), port, o.terminals))?;
    let gw = super::GatewayChild::spawn(dir.path(), &config)?;
    let outcome = measure(&o, port, gw.pid).await;
    gw.finish(outcome).await
}

async fn measure(o: &BenchOptions, port: u16, pid: u32) -> anyhow::Result<CanteenResult> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // Ready when the status says every card is loaded.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = sim::get_status(addr)
            .await
            .ok()
            .is_some_and(|n| n >= o.cards as u64);
        if ready {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the canteen did not load its cards within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_cards_loaded_mib = super::video::rss_mib(pid)?;
    let per = o.meals.div_ceil(u64::from(o.terminals));
    let gap = o
        .window
        .checked_div(u32::try_from(per).unwrap_or(u32::MAX))
        .unwrap_or_default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 1..=o.terminals {
        let mut t = SimTerminal::new(addr, &format!("t{i:02}"), &format!("bench-token-{i}"));
        let n = per.min(o.meals.saturating_sub(per * u64::from(i - 1)));
        let cards = o.cards;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // Terminals start spread over one gap, not all at once.
            tokio::time::sleep(gap.mul_f64(f64::from(i) / 20.0 % 1.0)).await;
            let start = Instant::now();
            for m in 0..n {
                let card = sim::card(((u64::from(i) * 7919 + m * 31) as usize % cards) + 1);
                let t0 = Instant::now();
                let sold = t.sell(&card, 850).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(sold.answer.approved(), "declined: {:?}", sold.answer);
                let next = start + gap * u32::try_from(m + 1).unwrap_or(u32::MAX);
                tokio::time::sleep_until(next.into()).await;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = started.elapsed();
    Ok(CanteenResult {
        bench: "canteen",
        terminals: o.terminals,
        meals: o.meals,
        cards: o.cards,
        window_secs: o.window.as_secs_f64(),
        elapsed_secs: elapsed.as_secs_f64(),
        approved: lat.len(),
        approval_p50_ms: quantile(&lat, 0.5),
        approval_p99_ms: quantile(&lat, 0.99),
        approval_max_ms: quantile(&lat, 1.0),
        rss_cards_loaded_mib,
        rss_after_rush_mib: super::video::rss_mib(pid)?,
    })
}

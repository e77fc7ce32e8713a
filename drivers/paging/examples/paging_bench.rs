//! Paging benchmarks (issue 15 "Performance"), against the simulated speakers on loopback:
//!
//! 1. `preempt`: a zone plays the bell; `broadcast.play evacuation` is sent; time until the
//!    speaker receives the first evacuation frame (target: well under 500 ms).
//! 2. `first_rtp`: an idle zone; `broadcast.play evacuation` → first RTP packet at the
//!    speaker, call setup included (target p99 <= 300 ms with linkage; this is the driver's part).
//! 3. `zones`: 100 zones of one speaker each, all playing at once; jitter of packet arrival
//!    against the 20 ms schedule, measured at the receivers (target p99 <= 5 ms at the sender;
//!    receiver scheduling noise is included, so this over-estimates it).
//!
//! `cargo run -p campusgw-paging --example paging_bench -- [samples]` (quiet machine; a
//! release build for figures, see the crate README).
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark tool: panics are its errors

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use campusgw_paging::SipPagingConfig;
use campusgw_paging::messages::Library;
use campusgw_paging::rtp::Codec;
use campusgw_paging::sim::{Behaviour, SpeakerSim, distinct_frames};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceId, Driver, DriverConfig, Location,
    Target,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn start(zones: &[(String, String)]) -> TestHost {
    let mut text = String::from("bind = \"127.0.0.1:0\"\n");
    for (id, uri) in zones {
        text.push_str(&format!("[[zone]]\ndevice = \"{id}\"\nlocation = {{ building = \"A\" }}\nspeakers = [{{ uri = \"{uri}\" }}]\n"));
    }
    let cfg: SipPagingConfig = toml::from_str(&text).unwrap();
    let host = TestHost::new("pa", "sip_paging");
    let bcx = BuildContext {
        device: DeviceId::new("pa").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    tokio::spawn(cfg.build(&bcx).unwrap().run(host.context()));
    host
}

fn cmd(kind: CommandKind, zone: &str, args: serde_json::Value) -> Command {
    Command::new(
        kind,
        Target::Device(DeviceId::new(zone).unwrap()),
        args,
        "bench",
    )
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut ms: Vec<f64>) {
    let n = ms.len();
    println!(
        "{name}: n={n} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.99),
        pct(&mut ms, 1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let lib = Library::load(
        &BTreeMap::new(),
        &BTreeMap::new(),
        &BTreeSet::from([Some("A".to_owned())]),
    )
    .unwrap();
    let evac = lib.program("evacuation", Some("A")).unwrap();
    let bell = lib.program("bell", Some("A")).unwrap();
    let evac_only = distinct_frames(evac, bell, Codec::Pcma);
    let bell_only = distinct_frames(bell, evac, Codec::Pcma);

    let spk = SpeakerSim::start(Behaviour::Answer).await.unwrap();
    let host = start(&[("z".into(), spk.uri())]);
    let (mut preempt, mut first) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        // idle → evacuation: first packet
        let before = spk.heard().rtp.packets;
        let t = Instant::now();
        let h = host.clone();
        tokio::spawn(async move {
            h.command(
                cmd(
                    CommandKind::BROADCAST_PLAY,
                    "z",
                    json!({"message": "evacuation", "repeat": true}),
                ),
                "z",
                WAIT,
            )
            .await
        });
        spk.wait_until(WAIT, |h| h.rtp.packets > before)
            .await
            .unwrap();
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        host.command(cmd(CommandKind::BROADCAST_STOP, "z", json!({})), "z", WAIT)
            .await;
        // bell → evacuation: first evacuation frame
        let r = host
            .command(
                cmd(
                    CommandKind::BROADCAST_PLAY,
                    "z",
                    json!({"message": "bell", "repeat": true}),
                ),
                "z",
                WAIT,
            )
            .await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        spk.wait_until(WAIT, |h| {
            h.rtp.recent.back().is_some_and(|p| bell_only.contains(p))
        })
        .await
        .unwrap();
        let t = Instant::now();
        let h = host.clone();
        tokio::spawn(async move {
            h.command(
                cmd(
                    CommandKind::BROADCAST_PLAY,
                    "z",
                    json!({"message": "evacuation", "repeat": true}),
                ),
                "z",
                WAIT,
            )
            .await
        });
        spk.wait_until(WAIT, |h| {
            h.rtp.recent.back().is_some_and(|p| evac_only.contains(p))
        })
        .await
        .unwrap();
        preempt.push(t.elapsed().as_secs_f64() * 1000.0);
        host.command(cmd(CommandKind::BROADCAST_STOP, "z", json!({})), "z", WAIT)
            .await;
    }
    report("first_rtp (idle zone, call setup included)", first);
    report(
        "preempt (bell -> evacuation, first evacuation frame)",
        preempt,
    );

    let mut sims = Vec::new();
    for _ in 0..100 {
        sims.push(SpeakerSim::start(Behaviour::Answer).await.unwrap());
    }
    let zones: Vec<(String, String)> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("z{i}"), s.uri()))
        .collect();
    let host = start(&zones);
    campusgw_paging::stats::reset();
    for (id, _) in &zones {
        let h = host.clone();
        let id = id.clone();
        tokio::spawn(async move {
            h.command(
                cmd(
                    CommandKind::BROADCAST_PLAY,
                    &id,
                    json!({"message": "evacuation", "repeat": true}),
                ),
                &id,
                WAIT,
            )
            .await
        });
    }
    for s in &sims {
        s.wait_until(WAIT, |h| h.rtp.packets >= 500).await.unwrap();
    }
    let mut jitter: Vec<f64> = sims
        .iter()
        .flat_map(|s| s.heard().rtp.jitter_us)
        .map(|us| f64::from(us) / 1000.0)
        .collect();
    let drift = sims
        .iter()
        .map(|s| s.heard().rtp.max_drift_ms)
        .fold(0.0, f64::max);
    let gaps: u64 = sims.iter().map(|s| s.heard().rtp.seq_gaps).sum();
    println!("zones: 100 zones x 10 s, seq gaps {gaps}, max drift {drift:.1}ms");
    report(
        "zones jitter |interval - 20ms| at receivers",
        std::mem::take(&mut jitter),
    );
    let p = campusgw_paging::stats::tick_lateness_percentile;
    println!(
        "zones sender tick lateness: p50<={}ms p99<={}ms p99.9<={}ms (1 ms buckets)",
        p(0.5).unwrap_or(0),
        p(0.99).unwrap_or(0),
        p(0.999).unwrap_or(0)
    );
}

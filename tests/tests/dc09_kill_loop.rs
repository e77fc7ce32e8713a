//! The DC-09 receiver path across SIGKILL: the real `campusgw` binary with a `driver =
//! "dc09"` receiver (TCP and UDP on the same port number), four simulated panels streaming
//! panic, intrusion and fire alarms at it, and the gateway killed with SIGKILL at random
//! moments while frames are in flight (`CAMPUSGW_KILL_ROUNDS`, default 20; seed in
//! `CAMPUSGW_KILL_SEED`, printed), restarted each time on the same data_dir.
//!
//! The panels ([`PanelSim`]): ADM-CID over TCP, SIA-DCS over UDP, AES-128 ADM-CID over TCP,
//! and one over TCP that "reboots" every third round: it numbers its messages from 0001
//! again and retransmits the last alarms it already had ACKed (a panel that lost its
//! memory of the ACKs), then sends new alarms under the sequence numbers its earlier,
//! different alarms used. Every panel retransmits what it saw no ACK for after each
//! restart, as panels do, until the end.
//!
//! The contract (DESIGN §4 Durability and Duplicates, ADR 0003): every alarm a panel saw
//! ACKed is in the journal, read back with `campusgw journal export`; none is there twice
//! (a retransmission, whatever its sequence number or timestamp, is the same event: the
//! journal's content key, `origin_ref` = the message's content, within the dedup window);
//! a different alarm under a reused sequence number is a new event; nothing is journaled
//! that no panel sent.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use campusgw_dc09::sim::{Outcome, PanelConfig, PanelSim, SimEvent, Transport};
use campusgw_dc09::{Key, KeyEncoding};
use campusgw_e2e::campusgw_bin;
use campusgw_e2e::gateway::{GatewayProcess, Ports, WAIT, kill_later, kill_loop_params};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::time::Instant;

/// The AES-128 key of the encrypted panel (16 ASCII characters: the key is their bytes).
const KEY: &str = "campusgw-dc09-k1";

/// How long a panel waits for an ACK before it counts the attempt as failed (the loop
/// retransmits it later); generous, so a slow commit on a loaded machine is no failure.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many of its last ACKed alarms the rebooting panel retransmits after a reboot.
const REPLAYED_AFTER_REBOOT: usize = 3;

/// The alarm codes cycled through: Contact ID and their SIA twins, with the kind each maps to.
const ALARMS: [(u16, &str, &str); 3] = [
    (120, "PA", "panic.alarm"),
    (130, "BA", "intrusion.alarm"),
    (110, "FA", "fire.alarm"),
];

/// One simulated panel of the loop and what it sent.
struct LoopPanel {
    device: &'static str,
    sia: bool,
    reboots: bool,
    sim: PanelSim,
    alarms: Vec<Alarm>,
}

/// One alarm as scripted (unique per panel: its partition and zone) and its fate.
#[derive(Debug, Clone)]
struct Alarm {
    kind: &'static str,
    partition: u8,
    zone: u16,
    event: SimEvent,
    acked: bool,
    /// Sequence numbers it went out under (a reboot reuses them for other alarms).
    sequences: Vec<u16>,
}

/// The panels: (device, account, transport, SIA-DCS, encrypted, reboots).
const PANELS: [(&str, &str, Transport, bool, bool, bool); 4] = [
    ("panel_tcp", "1001", Transport::Tcp, false, false, false),
    ("panel_udp", "1002", Transport::Udp, true, false, false),
    ("panel_aes", "1003", Transport::Tcp, false, true, false),
    ("panel_reboot", "1004", Transport::Tcp, false, false, true),
];

fn config_text(ports: &Ports, data: &Path) -> String {
    let mut accounts = String::new();
    for (device, account, _, _, encrypted, _) in PANELS {
        accounts.push_str(&format!(
            "[[device.account]]\naccount = \"{account}\"\ndevice = \"{device}\"\n"
        ));
        if encrypted {
            accounts.push_str(&format!("key = \"{KEY}\"\n"));
        }
    }
    format!(
        r#"[gateway]
id = "school-dc09"
name = "DC-09 kill loop"
data_dir = "{data}"

[[campus]]
id = "main"

[console]
listen = "127.0.0.1:{console}"

[[device]]
id = "alarm_rx"
driver = "dc09"
listen_tcp = "127.0.0.1:{port}"
listen_udp = "127.0.0.1:{port}"
unknown_account = "refuse"
# Four panels share 127.0.0.1: the per-source bucket must not be what this test measures.
frames_per_second = 100000
frame_burst = 100000
{accounts}"#,
        data = data.display(),
        console = ports.console,
        port = ports.device,
    )
}

fn panel_config(
    addr: SocketAddr,
    account: &str,
    transport: Transport,
    encrypted: bool,
) -> PanelConfig {
    let mut c = PanelConfig::new(transport, addr, account);
    c.ack_timeout = ACK_TIMEOUT;
    // One attempt per send: the loop itself retransmits what saw no ACK.
    c.retries = 0;
    if encrypted {
        c.key = Some(Key::parse(KEY, KeyEncoding::Text).unwrap());
    }
    c
}

/// Connects (TCP) or binds (UDP), retrying while a restarted listener comes up.
async fn connect(config: PanelConfig) -> PanelSim {
    let deadline = Instant::now() + WAIT;
    loop {
        match PanelSim::connect(config.clone()).await {
            Ok(sim) => return sim,
            Err(e) => assert!(Instant::now() < deadline, "cannot connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reconnect(sim: &mut PanelSim) {
    let deadline = Instant::now() + WAIT;
    while let Err(e) = sim.reconnect().await {
        assert!(Instant::now() < deadline, "cannot reconnect: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl LoopPanel {
    /// The n-th alarm of this panel: codes in turn, a partition and zone of its own.
    fn new_alarm(&self) -> Alarm {
        let n = self.alarms.len();
        let (cid, sia, kind) = ALARMS[n % ALARMS.len()];
        let partition = 1 + (n / 999) as u8;
        let zone = 1 + (n % 999) as u16;
        let event = if self.sia {
            SimEvent::sia(&partition.to_string(), sia, &format!("{zone:03}"))
        } else {
            SimEvent::cid(cid, partition, zone)
        };
        Alarm {
            kind,
            partition,
            zone,
            event,
            acked: false,
            sequences: Vec::new(),
        }
    }

    /// Sends alarm `i` once; true when it was ACKed. A broken link is a failed attempt.
    async fn send(&mut self, i: usize) -> bool {
        let event = self.alarms[i].event.clone();
        let outcome = tokio::time::timeout(WAIT, self.sim.send(&event))
            .await
            .expect("a send ends within the deadline");
        let seq = self.sim.sequence().value();
        self.alarms[i].sequences.push(seq);
        match outcome {
            Ok(Outcome::Acked { .. }) => {
                self.alarms[i].acked = true;
                true
            }
            Ok(Outcome::Duh { .. }) => panic!("{}: DUH for {event:?}", self.device),
            Ok(Outcome::NoAck { .. }) | Err(_) => false,
        }
    }

    /// One round: the unACKed alarms again, a reboot's replay, then new alarms until a send
    /// fails (the gateway was killed). In the last round only the first two, until each is
    /// ACKed.
    async fn round(mut self, reboot: bool, last: bool) -> LoopPanel {
        if reboot {
            self.sim.restart_sequence();
            let acked: Vec<usize> = (0..self.alarms.len())
                .filter(|&i| self.alarms[i].acked)
                .collect();
            for &i in acked.iter().rev().take(REPLAYED_AFTER_REBOOT) {
                if !self.send(i).await && !last {
                    return self;
                }
            }
        }
        let deadline = Instant::now() + WAIT;
        for i in 0..self.alarms.len() {
            while !self.alarms[i].acked {
                if !self.send(i).await && !last {
                    return self;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: alarm {i} never ACKed by the running gateway",
                    self.device
                );
            }
        }
        if last {
            return self;
        }
        loop {
            let alarm = self.new_alarm();
            self.alarms.push(alarm);
            if !self.send(self.alarms.len() - 1).await {
                return self;
            }
        }
    }
}

/// `campusgw journal export` of the data_dir, as JSON objects.
fn export(data_dir: &Path) -> Vec<Value> {
    let out = Command::new(campusgw_bin())
        .args(["journal", "export", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (device, kind, partition, zone) of a journaled dc09 alarm.
fn alarm_key(e: &Value) -> (String, String, u8, u16) {
    let p = &e["payload"];
    (
        e["source"]["device"].as_str().unwrap().to_owned(),
        e["kind"].as_str().unwrap().to_owned(),
        p["partition"].as_str().unwrap().parse().unwrap(),
        u16::try_from(p["zone"].as_u64().unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_dc09_alarm_survives_sigkill_loops_once_with_panels_that_retransmit_and_reboot()
{
    let (seed, rounds) = kill_loop_params("dc09 kill loop", 20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::start(dir.path(), "alarm_rx", Box::new(config_text)).await;
    let mut panels = Vec::new();
    for (device, account, transport, sia, encrypted, reboots) in PANELS {
        let sim = connect(panel_config(
            gw.device_addr(),
            account,
            transport,
            encrypted,
        ))
        .await;
        panels.push(LoopPanel {
            device,
            sia,
            reboots,
            sim,
            alarms: Vec::new(),
        });
    }
    let mut reboots = 0;
    for round in 0..=rounds {
        let last = round == rounds;
        let reboot = round % 3 == 2;
        reboots += u32::from(reboot);
        let killer =
            (!last).then(|| kill_later(gw.pid(), Duration::from_millis(rng.random_range(50..600))));
        let tasks: Vec<_> = panels
            .into_iter()
            .map(|p| {
                let reboot = reboot && p.reboots;
                tokio::spawn(p.round(reboot, last))
            })
            .collect();
        panels = Vec::new();
        for t in tasks {
            panels.push(t.await.expect("a panel task panicked"));
        }
        let Some(killer) = killer else { break };
        killer.await.unwrap();
        gw.crash_and_restart().await;
        for p in &mut panels {
            reconnect(&mut p.sim).await;
        }
    }

    let events = export(&gw.data_dir());
    let alarms: Vec<&Value> = events
        .iter()
        .filter(|e| e["source"]["driver"] == "dc09")
        .filter(|e| ALARMS.iter().any(|(_, _, k)| e["kind"] == *k))
        .collect();
    let mut journaled: HashMap<(String, String, u8, u16), Vec<&Value>> = HashMap::new();
    for e in &alarms {
        journaled.entry(alarm_key(e)).or_default().push(e);
    }
    let mut sent = HashSet::new();
    let (mut lost, mut doubled) = (Vec::new(), Vec::new());
    for p in &panels {
        for a in &p.alarms {
            let key = (p.device.to_owned(), a.kind.to_owned(), a.partition, a.zone);
            let n = journaled.get(&key).map_or(0, Vec::len);
            if a.acked && n == 0 {
                lost.push(key.clone());
            }
            if n > 1 {
                doubled.push((key.clone(), n));
            }
            sent.insert(key);
        }
    }
    let invented: Vec<_> = journaled.keys().filter(|k| !sent.contains(*k)).collect();
    // The journal's own duplicate contract: one event per (device, origin_ref).
    let mut refs = HashSet::new();
    let repeated_refs: Vec<&str> = alarms
        .iter()
        .filter_map(|e| e["origin_ref"].as_str().map(|r| (e, r)))
        .filter(|(e, r)| !refs.insert((e["source"]["device"].as_str(), *r)))
        .map(|(_, r)| r)
        .collect();
    let total: usize = panels.iter().map(|p| p.alarms.len()).sum();
    eprintln!(
        "dc09 kill loop: {total} alarms sent by {} panels, {} journaled, {reboots} reboots",
        panels.len(),
        alarms.len()
    );
    assert!(lost.is_empty(), "ACKed and lost (seed {seed}): {lost:?}");
    assert!(
        doubled.is_empty(),
        "journaled more than once (seed {seed}): {doubled:?}"
    );
    assert!(invented.is_empty(), "journaled, never sent: {invented:?}");
    assert!(
        repeated_refs.is_empty(),
        "one origin_ref journaled twice: {repeated_refs:?}"
    );
    assert!(
        alarms.iter().all(|e| e["origin_ref"].is_string()),
        "every dc09 alarm carries its content key"
    );
    for p in &panels {
        assert!(
            p.alarms.iter().all(|a| a.acked),
            "{}: alarms never ACKed at the end",
            p.device
        );
        assert!(
            p.alarms.len() as u32 > rounds,
            "{} sent alarms in every round ({} in all)",
            p.device,
            p.alarms.len()
        );
        assert!(
            p.alarms.iter().any(|a| a.sequences.len() > 1),
            "{}: some alarm was retransmitted after a kill",
            p.device
        );
    }
    // The rebooting panel reused sequence numbers for different alarms, and each is its
    // own event; its replays after a reboot (already ACKed, same content) stayed one each.
    let rebooting = panels.iter().find(|p| p.reboots).unwrap();
    let mut by_seq: HashMap<u16, HashSet<u16>> = HashMap::new();
    for a in &rebooting.alarms {
        for s in &a.sequences {
            by_seq.entry(*s).or_default().insert(a.zone);
        }
    }
    assert!(
        reboots > 0 && by_seq.values().any(|zones| zones.len() > 1),
        "a sequence number was reused for a different alarm"
    );
}

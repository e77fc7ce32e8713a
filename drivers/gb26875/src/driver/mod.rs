//! The gb26875 listener: accepts UITD connections, journals uploads, confirms them, and
//! sends centre-initiated commands.
//!
//! One task per connection ([`connection`]) owns its socket: it reads frames, emits each
//! upload's events in one transaction and confirms only after the journal committed them,
//! denies frames failing their checks, and correlates answers to commands by serial number.
//! The run loop accepts connections, routes commands to the connection of the addressed
//! UITD, and watches silence: a configured UITD not heard from for `heartbeat_timeout` is
//! reported `Offline` (and `Online` again on its next frame).
//!
//! # Resource bounds (the LAN is not trusted)
//! At most `max_connections` connections are served at once; one more is accepted and
//! closed at once (`campusgw_listener_refused_total{listener}`), so the kernel backlog does
//! not fill and an attacker's connections cost one descriptor each only briefly. An accept
//! that fails for lack of descriptors (`EMFILE`/`ENFILE`) backs off instead of spinning.
//! Each connection must send a valid frame within `identify_timeout`; only valid frames of
//! its UITD reset the `heartbeat_timeout`; every write has `write_timeout`; denies are
//! rate-limited per connection and answer only frames whose header and end marker were
//! found; a UITD with a `peers` list is refused from any other address.
//!
//! Commands (answered through [`campusgw_sdk::CommandRequest::respond`]; the detail of a
//! success is the UITD's answer frame as JSON, see [`crate::frame_to_json`]):
//!
//! | command | frame sent | args | success |
//! |---|---|---|---|
//! | `fire.sync_clock` | cmd 1, type 90, gateway clock in CST | — | confirm (3) |
//! | `fire.duty_check` | cmd 1, type 91 (查岗) | `minutes` (default 10) | confirm (3) |
//! | `fire.read_uitd_status` | cmd 4, type 81 | — | response (5) |
//! | `fire.read_system_status` | cmd 4, type 61 | `system_type`, `system_address` | response (5) |
//! | `fire.read_component_status` | cmd 4, type 62 | `system_type`, `system_address`, `component_address` | response (5) |
//!
//! A deny (6) answer is `Rejected`; no answer after `retries` retransmissions of
//! `response_timeout` each, or no connection, is `Failed`.

mod commands;
mod connection;
mod observe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_sdk::{Backoff, DeviceHealth, DeviceId, Driver, DriverContext, DriverError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::codec::Address;
use crate::config::{Gb26875Config, UnknownUitdPolicy};
use crate::mapping::UitdProfile;

pub(crate) use commands::Outgoing;

/// The running gb26875 listener (built by [`Gb26875Config`]).
#[derive(Debug)]
pub struct Gb26875Driver {
    config: Gb26875Config,
    listen: SocketAddr,
    centre: Address,
    bound: watch::Sender<Option<SocketAddr>>,
}

impl Gb26875Driver {
    pub(crate) fn new(config: Gb26875Config, listen: SocketAddr, centre: Address) -> Gb26875Driver {
        Gb26875Driver {
            config,
            listen,
            centre,
            bound: watch::channel(None).0,
        }
    }

    /// The address actually listened on, once bound (useful with port 0 in tests and demos).
    pub fn local_addr(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.bound.subscribe()
    }
}

/// A live connection of a known UITD.
struct Link {
    conn: u64,
    outbox: mpsc::Sender<Outgoing>,
}

/// What the driver knows about a configured UITD's health.
struct Liveness {
    device: DeviceId,
    last_seen: Instant,
    online: Option<bool>,
}

/// State shared by the run loop, the connections and the command tasks.
pub(crate) struct Shared {
    cx: DriverContext,
    centre: Address,
    profiles: HashMap<Address, UitdProfile>,
    devices: HashMap<DeviceId, Address>,
    unknown: UnknownUitdPolicy,
    heartbeat_timeout: Duration,
    response_timeout: Duration,
    retries: u8,
    identify_timeout: Duration,
    write_timeout: Duration,
    max_denies_per_second: u32,
    max_connections: usize,
    /// Connections being served now.
    open: AtomicUsize,
    /// `peers` allow lists of the UITDs that have one.
    peers: HashMap<Address, Vec<ipnet::IpNet>>,
    links: Mutex<HashMap<Address, Link>>,
    liveness: Mutex<HashMap<Address, Liveness>>,
}

impl Shared {
    fn new(d: &Gb26875Driver, cx: DriverContext) -> Shared {
        let profiles: HashMap<Address, UitdProfile> = d.config.profiles().into_iter().collect();
        let now = Instant::now();
        let mut devices = HashMap::new();
        let mut liveness = HashMap::new();
        for (addr, p) in &profiles {
            if let Some(dev) = &p.device {
                devices.insert(dev.clone(), *addr);
                liveness.insert(
                    *addr,
                    Liveness {
                        device: dev.clone(),
                        last_seen: now,
                        online: None,
                    },
                );
            }
        }
        Shared {
            cx,
            centre: d.centre,
            profiles,
            devices,
            unknown: d.config.unknown_uitd,
            heartbeat_timeout: d.config.heartbeat_timeout.0,
            response_timeout: d.config.response_timeout.0,
            retries: d.config.retries,
            identify_timeout: d.config.identify_timeout.0,
            write_timeout: d.config.write_timeout.0,
            max_denies_per_second: d.config.max_denies_per_second,
            max_connections: d.config.max_connections,
            open: AtomicUsize::new(0),
            peers: d.config.peer_lists().into_iter().collect(),
            links: Mutex::new(HashMap::new()),
            liveness: Mutex::new(liveness),
        }
    }

    /// A frame arrived from `uitd`: note activity, report Online on a change.
    fn saw(&self, uitd: Address) {
        let device = self.profiles.get(&uitd).and_then(|p| p.device.clone());
        let device = device.unwrap_or_else(|| self.cx.device().clone());
        self.cx.activity(&device);
        let mut live = self.liveness.lock().expect("liveness lock not poisoned");
        if let Some(l) = live.get_mut(&uitd) {
            l.last_seen = Instant::now();
            if l.online != Some(true) {
                l.online = Some(true);
                self.cx.report_health(&l.device, DeviceHealth::Online);
            }
        }
    }

    /// Reports Offline every configured UITD silent past the heartbeat timeout.
    fn check_silence(&self) {
        let now = Instant::now();
        let mut live = self.liveness.lock().expect("liveness lock not poisoned");
        for (addr, l) in live.iter_mut() {
            let silent = now.duration_since(l.last_seen);
            if silent >= self.heartbeat_timeout && l.online != Some(false) {
                l.online = Some(false);
                observe::uitd_silent(*addr, silent);
                let why = format!("no frame for {}s", silent.as_secs());
                self.cx.report_health(&l.device, DeviceHealth::Offline(why));
            }
        }
    }

    /// Whether `peer` may speak for `uitd` (no `peers` list: anyone may).
    fn peer_allowed(&self, uitd: Address, peer: std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let peer = match peer {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.peers
            .get(&uitd)
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&peer)))
    }

    fn register(&self, uitd: Address, conn: u64, outbox: mpsc::Sender<Outgoing>) {
        let mut links = self.links.lock().expect("links lock not poisoned");
        links.insert(uitd, Link { conn, outbox });
    }

    fn unregister(&self, uitd: Address, conn: u64) {
        let mut links = self.links.lock().expect("links lock not poisoned");
        if links.get(&uitd).is_some_and(|l| l.conn == conn) {
            links.remove(&uitd);
        }
    }

    fn outbox(&self, uitd: Address) -> Option<mpsc::Sender<Outgoing>> {
        let links = self.links.lock().expect("links lock not poisoned");
        links.get(&uitd).map(|l| l.outbox.clone())
    }
}

impl Driver for Gb26875Driver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let shared = Arc::new(Shared::new(&self, cx.clone()));
        let listener = match bind(&self, &cx).await {
            Some(l) => l,
            None => return Ok(()),
        };
        cx.report_health(cx.device(), DeviceHealth::Online);
        let tick =
            (shared.heartbeat_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut watchdog = tokio::time::interval(tick);
        let mut next_conn = 0u64;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if shared.open.load(Ordering::SeqCst) >= shared.max_connections {
                            // Accept-then-close: the backlog drains and the fd is freed now.
                            observe::over_cap(cx.device().as_str(), peer, shared.max_connections);
                            drop(stream);
                            continue;
                        }
                        next_conn += 1;
                        observe::connected(peer);
                        let guard = OpenGuard::new(shared.clone());
                        tokio::spawn(connection::serve(guard, stream, peer, next_conn));
                    }
                    Err(e) => {
                        // EMFILE/ENFILE (no descriptor left) and the like: back off briefly
                        // instead of spinning on an accept that fails at once.
                        observe::accept_failed(&e);
                        if !cx.sleep(Duration::from_millis(100)).await { break; }
                    }
                },
                cmd = cx.next_command() => match cmd {
                    Some(req) => { tokio::spawn(commands::execute(shared.clone(), req)); }
                    None => break,
                },
                _ = watchdog.tick() => shared.check_silence(),
                () = cx.shutdown().cancelled() => break,
            }
        }
        Ok(())
    }
}

/// Counts a connection as open while it lives.
pub(crate) struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> OpenGuard {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(shared)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binds the listener, retrying with back-off; `None` at shutdown.
async fn bind(d: &Gb26875Driver, cx: &DriverContext) -> Option<TcpListener> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match TcpListener::bind(d.listen).await {
            Ok(l) => {
                let addr = l.local_addr().unwrap_or(d.listen);
                observe::listening(addr);
                d.bound.send_replace(Some(addr));
                return Some(l);
            }
            Err(e) => {
                observe::bind_failed(d.listen, &e);
                cx.report_health(
                    cx.device(),
                    DeviceHealth::Offline(format!("cannot listen on {}: {e}", d.listen)),
                );
                if !cx.sleep(backoff.next_delay()).await {
                    return None;
                }
            }
        }
    }
}

//! A `campusgw run` child process for end-to-end tests: config written from the ports it
//! was given, ready once `/healthz` shows a chosen device online, SIGKILL and restart on the
//! same data_dir, the journal read back.
//!
//! Ports are never fixed: each is picked by binding 127.0.0.1:0 and releasing it, and a
//! gateway that then fails to bind is restarted on fresh ports. Every wait has a deadline;
//! the process is killed when its guard drops, even on a failed assert.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use campusgw::journal::JournalReader;
use campusgw_sdk::Event;
use tokio::time::Instant;

use crate::campusgw_bin;

/// Deadline of every wait of the harness.
pub const WAIT: Duration = Duration::from_secs(20);

/// The two ports a gateway listens on: one for a device listener (or a simulator the
/// config points at), one for the console.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The device side.
    pub device: u16,
    /// `[console] listen`.
    pub console: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            device: free_port(),
            console: free_port(),
        }
    }
}

/// Binds 127.0.0.1:0, reads the port and releases it (the gateway binds it right after).
///
/// # Panics
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Writes the config for the given ports and data_dir.
pub type ConfigFn = Box<dyn Fn(&Ports, &Path) -> String + Send>;

/// A `campusgw run` child process, killed (SIGKILL, which also ends a stopped process)
/// when dropped.
pub struct GatewayProcess {
    child: Option<Child>,
    dir: PathBuf,
    ports: Ports,
    config: ConfigFn,
    ready_device: String,
    starts: u32,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl GatewayProcess {
    /// Starts a gateway in `dir` (config, logs and `data/` live there) on fresh ports,
    /// ready once `/healthz` shows `ready_device` online; picks new ports when it cannot
    /// bind the ones it was given.
    ///
    /// # Panics
    /// When the gateway never comes up, with its last log.
    pub async fn start(dir: &Path, ready_device: &str, config: ConfigFn) -> GatewayProcess {
        let mut gw = GatewayProcess {
            child: None,
            dir: dir.to_owned(),
            ports: Ports::pick(),
            config,
            ready_device: ready_device.to_owned(),
            starts: 0,
        };
        for _ in 0..5 {
            gw.spawn();
            match gw.wait_ready().await {
                Ok(()) => return gw,
                Err(why) => {
                    eprintln!("gateway did not come up ({why}); retrying on other ports");
                    gw.kill();
                    gw.ports = Ports::pick();
                }
            }
        }
        panic!("the gateway never came up; last log:\n{}", gw.log());
    }

    /// Its data_dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The ports it was configured with.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// `127.0.0.1:<device port>`.
    pub fn device_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.device))
    }

    /// The running process's id.
    ///
    /// # Panics
    /// When it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("campusgw-{}.log", self.starts))
    }

    /// The log (stderr) of the current start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Writes the config and spawns `campusgw run` (stderr to a log file per start).
    fn spawn(&mut self) {
        let config = self.dir.join("gateway.toml");
        let text = (self.config)(&self.ports, &self.data_dir());
        std::fs::write(&config, text).expect("write the config");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("create the log");
        let child = Command::new(campusgw_bin())
            .env("CAMPUSGW_LOG", "info")
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn campusgw");
        self.child = Some(child);
    }

    /// Waits until `/healthz` reports the ready device online. Errs if the process exits
    /// (the console port was taken) or the device reports it cannot listen.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{}/healthz", self.ports.console);
        let deadline = Instant::now() + WAIT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let log = self.log();
                assert!(!log.contains("problem"), "config rejected:\n{log}");
                return Err(format!("exited with {status}"));
            }
            if let Some(body) = healthz(&url).await {
                let device = &body["devices"][self.ready_device.as_str()];
                if device["state"] == "online" {
                    return Ok(());
                }
                let reason = device["reason"].as_str().unwrap_or_default();
                if reason.contains("cannot listen") {
                    return Err(reason.to_owned());
                }
            }
            if Instant::now() >= deadline {
                return Err("not ready before the deadline".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal with `kill(1)` (the workspace forbids `unsafe`, so no libc call).
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGKILL and reap, if running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the gateway (SIGKILL) and starts it again on the same data_dir and ports.
    ///
    /// # Panics
    /// When it does not come up again, with its log.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
        // The ports were just ours; the listener retries its bind until it is free again.
        if let Err(why) = self.wait_ready().await {
            panic!("restart failed: {why}; log:\n{}", self.log());
        }
    }
}

/// `/healthz` as JSON, or `None` while it does not answer.
pub async fn healthz(url: &str) -> Option<serde_json::Value> {
    // reqwest is built without a default TLS provider in this workspace; pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(url).await.ok()?;
    resp.json().await.ok()
}

/// Every event in the journal at `data_dir`, in seq order.
///
/// # Panics
/// When the journal cannot be read.
pub fn journal(data_dir: &Path) -> Vec<Event> {
    let reader = JournalReader::open(&data_dir.join("journal.db")).expect("open the journal");
    let mut all = Vec::new();
    loop {
        let page = reader
            .after(all.last().map_or(0, |e: &Event| e.seq), None, 1000)
            .expect("read the journal");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The events of `kind`.
pub fn of_kind<'a>(events: &'a [Event], kind: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.kind.as_str() == kind).collect()
}

/// Polls the journal until `find` returns something.
///
/// # Panics
/// At the deadline, naming `what`.
pub async fn wait_journal<T>(
    data_dir: &Path,
    what: &str,
    find: impl Fn(&[Event]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = find(&journal(data_dir)) {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `kill -KILL pid` after `delay`, from a task of its own.
pub fn kill_later(pid: u32, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    })
}

/// A kill loop's seed and round count: `CAMPUSGW_KILL_SEED` (to replay a failure) or a
/// random seed, `CAMPUSGW_KILL_ROUNDS` or `default_rounds`; printed so a failure names them.
pub fn kill_loop_params(name: &str, default_rounds: u32) -> (u64, u32) {
    let seed: u64 = std::env::var("CAMPUSGW_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let rounds: u32 = std::env::var("CAMPUSGW_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_rounds);
    eprintln!("{name}: CAMPUSGW_KILL_SEED={seed} CAMPUSGW_KILL_ROUNDS={rounds}");
    (seed, rounds)
}

//! Benchmarks (`campusgw bench ...`) and the journal crash-test writer. Figures and the
//! commands that produced them are in `bench/README.md`; benchmarks are commands, never
//! timed tests.

pub mod access;
pub mod access_scale;
pub mod canteen;
pub mod console;
pub mod crash;
pub mod dc09;
pub mod firecentre;
pub mod gb26875;
pub mod gb28181;
pub mod ingest;
pub mod linkage;
pub mod outage;
pub mod retention;
pub mod rules;
pub mod startup;
pub mod video;

use std::path::{Path, PathBuf};

use anyhow::Context;
use campusgw_sdk::event::kinds;
use campusgw_sdk::{Class, Kind, NewEvent};

/// The i-th event of the benchmarks' class mix: 10 % `life_safety`, 10 % `security`,
/// 30 % `business`, 50 % `telemetry`.
pub fn mixed_event(i: u64) -> NewEvent {
    let (kind, class) = match i % 10 {
        0 => (kinds::FIRE_ALARM, Class::LifeSafety),
        1 => (kinds::DOOR_FORCED, Class::Security),
        2..=4 => (Kind::from_static("access.granted"), Class::Business),
        _ => (kinds::SENSOR_READING, Class::Telemetry),
    };
    NewEvent::new(kind, class)
        .payload(serde_json::json!({ "point": format!("p{}", i % 2000), "value": i }))
}

/// A free loopback TCP port (bound, read, released: the caller binds it right after).
///
/// # Errors
/// The bind error.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh directory for a benchmark's journal, removed on drop.
pub struct BenchDir(PathBuf);

impl BenchDir {
    /// Creates `<base or the system temp dir>/campusgw-<what>-<uuid>`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn create(base: Option<PathBuf>, what: &str) -> anyhow::Result<BenchDir> {
        let root = base.unwrap_or_else(std::env::temp_dir);
        let dir = root.join(format!("campusgw-{what}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(BenchDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `q` quantile (0 = min, 1 = max) of `v` by nearest rank; NaN when empty.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The gateway under test as a child process of this very binary (`campusgw run --config
/// CONFIG`), for the benches that read its RSS and CPU from `/proc/<pid>`: its log goes to
/// `<dir>/gateway.log`, and it is killed when dropped.
pub(crate) struct GatewayChild {
    /// The process, for benches that watch it.
    pub child: tokio::process::Child,
    /// Its pid.
    pub pid: u32,
    log: PathBuf,
}

impl GatewayChild {
    /// Starts it.
    ///
    /// # Errors
    /// The log cannot be created or the process not started.
    pub(crate) fn spawn(dir: &Path, config: &Path) -> anyhow::Result<GatewayChild> {
        let log = dir.join("gateway.log");
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the gateway child")?;
        let pid = child.id().context("the child has no pid")?;
        Ok(GatewayChild { child, pid, log })
    }

    /// Stops it, then prints the measurement as one JSON line (exit code 0), or returns the
    /// measurement's error with where the gateway's log is.
    ///
    /// # Errors
    /// The measurement failed, or its result does not serialize.
    pub(crate) async fn finish<R: serde::Serialize>(
        mut self,
        outcome: anyhow::Result<R>,
    ) -> anyhow::Result<i32> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        match outcome {
            Ok(r) => {
                println!("{}", serde_json::to_string(&r)?);
                Ok(0)
            }
            Err(e) => Err(e.context(format!("the gateway's log is {}", self.log.display()))),
        }
    }
}

//! Runs every device's driver, restarting a failed or panicked one with exponential
//! back-off and jitter; one driver's failure never stops the others (each runs in its
//! own task, and a panic is caught at that task's join).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use campusgw_sdk::driver::{
    Backoff, BuildContext, ContextParts, DeviceHealth, DriverContext, HealthSink,
};
use campusgw_sdk::{CommandInbox, DeviceId};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::CommandRouter;
use crate::config::DeviceConfig;
use crate::health::HealthBoard;
use crate::journal::Journal;

/// A driver that ran this long is considered healthy again: its back-off resets.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How a driver instance is doing.
#[derive(Debug, Clone, Serialize)]
pub struct DriverStatus {
    /// Its kind.
    pub driver: &'static str,
    /// `starting`, `running`, `restarting` or `stopped`.
    pub state: &'static str,
    /// Restarts since the gateway started.
    pub restarts: u64,
    /// Why it last stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Driver states, shared with the API.
pub type DriverStates = Arc<Mutex<BTreeMap<DeviceId, DriverStatus>>>;

/// Back-off bounds for restarts.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// The running drivers.
pub struct Supervisor {
    tasks: Vec<JoinHandle<()>>,
    /// Per-driver state for `/healthz`.
    pub states: DriverStates,
}

/// What every driver task shares.
#[derive(Clone)]
pub struct Shared {
    /// The journal.
    pub journal: Journal,
    /// Device health.
    pub health: Arc<HealthBoard>,
    /// Data directory for drivers.
    pub data_dir: PathBuf,
    /// Fires at shutdown.
    pub shutdown: CancellationToken,
    /// Restart back-off.
    pub restart: RestartPolicy,
}

impl Supervisor {
    /// Starts one task per device and registers each with the command router.
    pub fn start(
        devices: &[DeviceConfig],
        shared: &Shared,
        router: &mut CommandRouter,
    ) -> Supervisor {
        let states: DriverStates = Arc::default();
        let mut tasks = Vec::new();
        for d in devices {
            // The channel itself is made when the first command arrives (CommandInbox).
            let inbox = Arc::new(CommandInbox::new());
            router.register(&d.id, &d.location, inbox.clone());
            shared
                .health
                .register(d.id.clone(), d.driver, d.location.clone(), d.offline_after);
            for (sub, loc) in d.factory.sub_devices() {
                let loc = loc.unwrap_or_else(|| d.location.clone());
                router.register(&sub, &loc, inbox.clone());
                shared.health.register(sub, d.driver, loc, d.offline_after);
            }
            let escape = d.factory.escape_routes();
            if !escape.is_empty() {
                // Commanding the instance commands all its doors (ISAPI door 65535), so it
                // is guarded like the escape doors behind it.
                router.add_escape_route(d.id.clone());
            }
            for e in escape {
                router.add_escape_route(e);
            }
            states.lock().expect("fresh lock").insert(
                d.id.clone(),
                DriverStatus {
                    driver: d.driver,
                    state: "starting",
                    restarts: 0,
                    last_error: None,
                },
            );
            tasks.push(tokio::spawn(supervise(
                d.clone(),
                shared.clone(),
                inbox,
                states.clone(),
            )));
        }
        Supervisor { tasks, states }
    }

    /// Waits for every driver to stop after shutdown fired; aborts those still running
    /// after `grace`.
    pub async fn join(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

fn set_state(states: &DriverStates, id: &DeviceId, f: impl FnOnce(&mut DriverStatus)) {
    let mut map = states
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = map.get_mut(id) {
        f(s);
    }
}

async fn supervise(d: DeviceConfig, sh: Shared, commands: Arc<CommandInbox>, states: DriverStates) {
    let mut backoff = Backoff::new(sh.restart.base, sh.restart.max);
    let mut restarted = false;
    let bcx = BuildContext {
        device: d.id.clone(),
        location: d.location.clone(),
        data_dir: sh.data_dir.clone(),
    };
    while !sh.shutdown.is_cancelled() {
        let cx = DriverContext::new(ContextParts {
            device: d.id.clone(),
            driver: d.driver,
            location: d.location.clone(),
            sink: Arc::new(sh.journal.clone()),
            health: sh.health.clone(),
            commands: commands.clone(),
            shutdown: sh.shutdown.clone(),
        });
        let started = Instant::now();
        let outcome = match d.factory.start(&bcx, cx) {
            Ok(fut) => {
                set_state(&states, &d.id, |s| s.state = "running");
                // The first start of every device is summed up in the "ready" line (2,000
                // devices would log 2,000 lines while the gateway starts); restarts are news.
                if restarted {
                    tracing::info!(device = %d.id, driver = d.driver, "driver restarted");
                } else {
                    tracing::debug!(device = %d.id, driver = d.driver, "driver started");
                }
                match tokio::spawn(fut).await {
                    Ok(Ok(())) if sh.shutdown.is_cancelled() => break,
                    Ok(Ok(())) => "driver returned before shutdown".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(j) if j.is_panic() => {
                        format!("driver panicked: {}", panic_message(j.into_panic()))
                    }
                    Err(j) => format!("driver task ended: {j}"),
                }
            }
            Err(e) => format!("cannot build driver: {e}"),
        };
        if sh.shutdown.is_cancelled() {
            break;
        }
        if started.elapsed() > STABLE_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        restarted = true;
        tracing::error!(device = %d.id, driver = d.driver, error = %outcome, retry_in = ?delay, "driver stopped; restarting");
        metrics::counter!("driver_restarts_total", "device" => d.id.to_string(), "driver" => d.driver).increment(1);
        set_state(&states, &d.id, |s| {
            s.state = "restarting";
            s.restarts += 1;
            s.last_error = Some(outcome.clone());
        });
        // The devices behind this instance are unreachable while it is down too.
        for (sub, _) in d.factory.sub_devices() {
            sh.health.report(
                &sub,
                DeviceHealth::Offline(format!("driver of {} stopped: {outcome}", d.id)),
            );
        }
        sh.health.report(&d.id, DeviceHealth::Offline(outcome));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = sh.shutdown.cancelled() => break,
        }
    }
    set_state(&states, &d.id, |s| s.state = "stopped");
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_owned())
}

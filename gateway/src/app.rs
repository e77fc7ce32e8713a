//! Assembles a running gateway from a validated config: journal, health, drivers, API.
//! Shutdown order: stop drivers (no new events), then flush and close the journal.
//!
//! # Writer supervision
//! If the journal writer thread dies (a panic, or a return nobody asked for), nothing can be
//! journaled: every append fails with `EmitError::Closed`, so drivers withhold their
//! confirms and devices retransmit. A watcher then fails the gateway: `/healthz` answers
//! 503 with the reason at once, and after [`RunOptions::failure_linger`] (so monitoring can
//! see why) [`Gateway::failed`] resolves and `campusgw run` stops and exits with
//! [`EXIT_GATEWAY_FAILED`], and the service manager (`Restart=always`) starts a fresh process.
//! The writer is not restarted in-process: a panic may have left the writer's state
//! (pending batch, seq counter, outage bookkeeping) inconsistent with the database, and
//! a fresh process re-derives all of it from the committed file, which the crash
//! guarantee already covers; a restart costs about the start-up time (≤ 1 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use campusgw_sdk::{Command, DeviceId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::commands::CommandRouter;
use crate::config::Config;
use crate::health::{self, HealthBoard};
use crate::journal::{Journal, JournalOptions, WriterHandle};
use crate::supervisor::{RestartPolicy, Shared, Supervisor};

/// A running gateway.
pub struct Gateway {
    /// The journal.
    pub journal: Journal,
    /// The HTTP address actually bound.
    pub http_addr: SocketAddr,
    /// Command routing to drivers.
    pub commands: Arc<CommandRouter>,
    /// Device health.
    pub health: Arc<HealthBoard>,
    /// The operator console.
    pub console: crate::console::ConsoleState,
    /// The alarm board (console, API).
    pub alarms: crate::alarms::AlarmStore,
    shutdown: CancellationToken,
    supervisor: Supervisor,
    uplinks: crate::uplink::Uplinks,
    writer: WriterHandle,
    background: Vec<tokio::task::JoinHandle<()>>,
    failure: watch::Receiver<Option<String>>,
}

/// Exit code of `campusgw run` when the gateway cannot go on (sysexits `EX_SOFTWARE`): the
/// journal writer died, or a supervised task (the rules runner) crash-looped and was given up.
pub const EXIT_GATEWAY_FAILED: i32 = 70;

/// Faults a test can inject into a real `campusgw run` through `CAMPUSGW_FAULT`
/// (comma-separated `key=duration`): `writer_panic_after=2s` panics the journal writer
/// that long after start; `failure_linger=5s` overrides [`RunOptions::failure_linger`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Panic the writer this long after start.
    pub writer_panic_after: Option<Duration>,
    /// Keep answering 503 this long before stopping.
    pub failure_linger: Option<Duration>,
}

impl FaultPlan {
    /// Parses `CAMPUSGW_FAULT` (unset or empty: no faults).
    ///
    /// # Errors
    /// A message naming the bad entry.
    pub fn from_env() -> Result<FaultPlan, String> {
        let spec = std::env::var("CAMPUSGW_FAULT").unwrap_or_default();
        let mut plan = FaultPlan::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("CAMPUSGW_FAULT: {item:?} is not key=duration"))?;
            let d = humantime::parse_duration(value)
                .map_err(|e| format!("CAMPUSGW_FAULT: {item:?}: {e}"))?;
            match key {
                "writer_panic_after" => plan.writer_panic_after = Some(d),
                "failure_linger" => plan.failure_linger = Some(d),
                _ => return Err(format!("CAMPUSGW_FAULT: unknown fault {key:?}")),
            }
        }
        Ok(plan)
    }
}

/// Tunables that are not in the config file (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Driver restart back-off.
    pub restart: RestartPolicy,
    /// How often silence is checked.
    pub health_tick: Duration,
    /// How often retention runs.
    pub maintenance_every: Duration,
    /// After the journal writer died: how long `/healthz` keeps answering 503 before
    /// [`Gateway::failed`] resolves.
    pub failure_linger: Duration,
    /// Injected faults (tests only).
    pub fault: FaultPlan,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            restart: RestartPolicy::default(),
            health_tick: Duration::from_secs(1),
            maintenance_every: Duration::from_secs(60),
            failure_linger: Duration::from_secs(1),
            fault: FaultPlan::default(),
        }
    }
}

impl Gateway {
    /// Opens the journal and starts everything.
    ///
    /// # Errors
    /// Journal or listener errors.
    pub async fn start(config: Config, opts: RunOptions) -> anyhow::Result<Gateway> {
        let started = Instant::now();
        // Before anything opens descriptors: the caps below are fitted to this limit.
        let fd_limit = crate::fds::raise_nofile();
        // Install the metrics recorder before anything records: counts made before it
        // exists are lost.
        api::metrics_handle();
        // Before the journal opens: a bad roster stops the start with nothing to undo.
        let roster = match config.access.as_ref().and_then(|a| a.roster.as_ref()) {
            Some(path) => crate::presence::Roster::load(path).map_err(anyhow::Error::msg)?,
            None => crate::presence::Roster::default(),
        };
        let data_dir = config.gateway.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data_dir {}: {e}", data_dir.display()))?;
        let mut jopts = JournalOptions::new(data_dir.join("journal.db"));
        jopts.retention = config.gateway.journal.policy();
        jopts.dedup_window = config.gateway.journal.dedup_window.0;
        jopts.access_retention = config.gateway.journal.access_retention.map(|d| d.0);
        jopts.uplinks = crate::uplink::journal_specs(&config.uplinks);
        jopts.rules_consumer = config.rules.is_some();
        let (journal, writer) = Journal::open(jopts)?;
        // Before any driver runs: rules start after what was already committed.
        let start_after = *journal.committed_seq().borrow();
        let shutdown = CancellationToken::new();
        let gateway_id = DeviceId::new(config.gateway.id.clone()).map_err(anyhow::Error::msg)?;
        let (board, health_rx) = HealthBoard::new();
        let mut router = CommandRouter::new(journal.clone(), gateway_id.clone());
        let shared = Shared {
            journal: journal.clone(),
            health: board.clone(),
            data_dir,
            shutdown: shutdown.clone(),
            restart: opts.restart,
        };
        let supervisor = Supervisor::start(&config.devices, &shared, &mut router);
        let commands = Arc::new(router);
        let uplinks = crate::uplink::start(
            &config.uplinks,
            &crate::uplink::UplinkContext {
                journal: journal.clone(),
                gateway_id: gateway_id.clone(),
                commands: Some(commands.clone()),
                drivers: Some(supervisor.states.clone()),
                shutdown: shutdown.clone(),
            },
        );
        let alarms = crate::alarms::AlarmStore::new(journal.clone(), gateway_id.clone())?;
        let (rules_task, rules_failure) = match &config.rules {
            Some(section) => crate::rules::spawn(
                section,
                &config.uplinks,
                crate::rules::SpawnContext {
                    journal: journal.clone(),
                    store: alarms.clone(),
                    router: commands.clone(),
                    gateway: gateway_id.clone(),
                    start_after,
                    shutdown: shutdown.clone(),
                },
            )
            .map(|(task, failure)| (Some(task), Some(failure)))?,
            None => (None, None),
        };
        let mut background = vec![
            tokio::spawn(health::run(
                board.clone(),
                health_rx,
                journal.clone(),
                opts.health_tick,
                shutdown.clone(),
            )),
            journal.spawn_maintenance(opts.maintenance_every),
        ];
        background.extend(rules_task);
        let mut console = crate::console::ConsoleState::start(crate::console::ConsoleParts {
            journal: journal.clone(),
            health: board.clone(),
            uplinks: uplinks.board.clone(),
            devices: config
                .devices
                .iter()
                .map(|d| crate::console::DeviceInfo {
                    id: d.id.clone(),
                    driver: d.driver,
                    location: d.location.clone(),
                })
                .collect(),
            gateway_id: gateway_id.clone(),
            commands: Some(commands.clone()),
            rules: match &config.rules {
                Some(r) => crate::console::rules::RuleSource::dir(
                    r.dir.clone(),
                    crate::rules::rule_env(r, &config.uplinks),
                ),
                None => crate::console::rules::RuleSource::default(),
            },
            alarms: Some(alarms.clone()),
            data_dir: config.gateway.data_dir.clone(),
            config_file: config.source.clone(),
        })?;
        // Presence is rebuilt from the journal now, not at the first muster request.
        let presence = Arc::new(crate::presence::Presence::new(journal.clone(), roster));
        {
            let p = presence.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || p.refresh()).await? {
                tracing::warn!(error = %e, "presence not rebuilt from the journal yet; retried on first use");
            }
        }
        console.presence = presence;
        let state = ApiState {
            started,
            journal: journal.clone(),
            drivers: supervisor.states.clone(),
            health: board.clone(),
            gateway_id: config.gateway.id.clone(),
            uplinks: uplinks.board.clone(),
            console: Some(console.clone()),
            rules_failure: rules_failure.clone(),
        };
        let c = &config.console;
        let devices: Vec<(String, usize)> = config
            .devices
            .iter()
            .filter(|d| d.inbound_connections > 0)
            .map(|d| (d.id.to_string(), d.inbound_connections))
            .collect();
        let tls = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert), Some(key)) => Some(api::load_tls(cert, key)?),
            _ if c.tls_self_signed => {
                let names = vec![c.listen.ip().to_string(), "localhost".to_owned()];
                let (cert, key) =
                    crate::console::tls::self_signed(&config.gateway.data_dir, &names)?;
                Some(api::load_tls(&cert, &key)?)
            }
            _ => None,
        };
        let serve_opts = api::ServeOptions {
            max_connections: crate::fds::fit_console_cap(fd_limit, c.max_connections, &devices),
            header_timeout: c.header_timeout.0,
            idle_timeout: c.idle_timeout.0,
            tls,
        };
        let (http_addr, http) = api::serve(c.listen, state, serve_opts, shutdown.clone()).await?;
        background.push(http);
        let (fail_tx, failure) = watch::channel(None);
        let linger = opts.fault.failure_linger.unwrap_or(opts.failure_linger);
        let fail_tx = Arc::new(fail_tx);
        background.push(tokio::spawn(watch_writer(
            journal.clone(),
            fail_tx.clone(),
            linger,
        )));
        if let Some(rx) = rules_failure {
            background.push(tokio::spawn(watch_rules(rx, fail_tx, linger)));
        }
        if let Some(after) = opts.fault.writer_panic_after {
            let j = journal.clone();
            background.push(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                tracing::warn!("fault injection: killing the journal writer");
                j.kill_writer_for_test().await;
            }));
        }
        tracing::info!(http = %http_addr, devices = config.devices.len(), ready_ms = started.elapsed().as_millis() as u64, "campusgw ready");
        Ok(Gateway {
            journal,
            http_addr,
            commands,
            health: board,
            console,
            alarms,
            shutdown,
            supervisor,
            uplinks,
            writer,
            background,
            failure,
        })
    }

    /// Resolves with the reason once the gateway cannot go on (the journal writer died);
    /// the caller should [`Gateway::stop`] and exit non-zero. Pending forever otherwise.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Executes a command (from the demo script, rules or the API).
    pub async fn command(&self, c: Command) -> Vec<campusgw_sdk::CommandResult> {
        self.commands.execute(c, Duration::from_secs(10)).await
    }

    /// The shutdown token (fires on SIGTERM/SIGINT in `run`).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops drivers, then flushes and closes the journal.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.supervisor.join(Duration::from_secs(5)).await;
        self.uplinks.join(Duration::from_secs(5)).await;
        for t in self.background {
            t.abort();
        }
        self.journal.close().await;
        let w = self.writer;
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
        tracing::info!("campusgw stopped; journal flushed");
    }
}

/// Waits for the journal writer to stop; if nobody asked it to, reports the failure after
/// `linger` (during which `/healthz` already answers 503).
async fn watch_writer(
    journal: Journal,
    failure: Arc<watch::Sender<Option<String>>>,
    linger: Duration,
) {
    journal.writer_stopped().await;
    let Some(reason) = journal.status().writer_failure() else {
        return;
    };
    tracing::error!(reason = %reason, linger_ms = linger.as_millis() as u64, "gateway failing: the journal writer died; exiting so the service manager restarts campusgw");
    tokio::time::sleep(linger).await;
    failure.send_replace(Some(reason));
}

/// Waits for the rules runner's supervisor to give up; then, like a dead writer, reports
/// the failure after `linger` (during which `/healthz` already answers 503).
async fn watch_rules(
    mut rx: crate::rules::RunnerFailure,
    failure: Arc<watch::Sender<Option<String>>>,
    linger: Duration,
) {
    let Ok(reason) = rx.wait_for(Option::is_some).await.map(|r| r.clone()) else {
        return;
    };
    let reason = reason.unwrap_or_default();
    tracing::error!(reason = %reason, linger_ms = linger.as_millis() as u64, "gateway failing: the rules runner keeps failing; exiting so the service manager restarts campusgw");
    tokio::time::sleep(linger).await;
    failure.send_replace(Some(reason));
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

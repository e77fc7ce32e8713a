//! Assembles a running gateway from a validated config: journal, health, drivers, API.
//! Shutdown order: stop drivers (no new events), then flush and close the journal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use campusgw_sdk::{Command, DeviceId};
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
    shutdown: CancellationToken,
    supervisor: Supervisor,
    uplinks: crate::uplink::Uplinks,
    writer: WriterHandle,
    background: Vec<tokio::task::JoinHandle<()>>,
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            restart: RestartPolicy::default(),
            health_tick: Duration::from_secs(1),
            maintenance_every: Duration::from_secs(60),
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
        // Install the metrics recorder before anything records: counts made before it
        // exists are lost.
        api::metrics_handle();
        let data_dir = config.gateway.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data_dir {}: {e}", data_dir.display()))?;
        let mut jopts = JournalOptions::new(data_dir.join("journal.db"));
        jopts.retention = config.gateway.journal.policy();
        jopts.dedup_window = config.gateway.journal.dedup_window.0;
        jopts.uplinks = crate::uplink::journal_specs(&config.uplinks);
        let (journal, writer) = Journal::open(jopts)?;
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
        let state = ApiState {
            started,
            journal: journal.clone(),
            drivers: supervisor.states.clone(),
            health: board.clone(),
            gateway_id: config.gateway.id.clone(),
            uplinks: uplinks.board.clone(),
        };
        let (http_addr, http) = api::serve(config.console.listen, state, shutdown.clone()).await?;
        background.push(http);
        tracing::info!(http = %http_addr, devices = config.devices.len(), ready_ms = started.elapsed().as_millis() as u64, "campusgw ready");
        Ok(Gateway {
            journal,
            http_addr,
            commands,
            health: board,
            shutdown,
            supervisor,
            uplinks,
            writer,
            background,
        })
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

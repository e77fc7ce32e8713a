//! The `campusgw` command line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use campusgw_sdk::driver::{ContextParts, DriverContext, EmitError, Receipt};
use campusgw_sdk::event::kinds;
use campusgw_sdk::{Class, DeviceId, Location, NewEvent};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::app::{Gateway, RunOptions, wait_for_signal};
use crate::health::HealthBoard;
use crate::journal::{Journal, JournalOptions};

/// campusgw: the edge gateway for campus safety systems.
#[derive(Debug, Parser)]
#[command(name = "campusgw", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the gateway with a config file.
    Run {
        /// The TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file offline; exit 0 if good, 1 with every problem listed.
    CheckConfig {
        /// The TOML config.
        file: PathBuf,
    },
    /// Run a simulated school: the gateway plus device simulators, with scripted activity.
    Demo {
        /// Where the demo journal goes (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP address for health and metrics.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Stop after this long (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<humantime::Duration>,
    },
    /// Journal tools.
    Journal {
        /// What to do with the journal.
        #[command(subcommand)]
        command: JournalCmd,
    },
    /// Decode a captured frame and print it as JSON (a field tool for integrators).
    Decode {
        /// The protocol.
        #[command(subcommand)]
        protocol: DecodeCmd,
    },
    /// Benchmarks.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        command: BenchCmd,
    },
}

/// `campusgw journal ...`
#[derive(Debug, Subcommand)]
pub enum JournalCmd {
    /// Print events, one JSON object per line (docs/event-schema.md).
    Export {
        /// The gateway's data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only events with seq > SINCE.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Only this class.
        #[arg(long)]
        class: Option<Class>,
    },
    /// Test aid for the crash test: emits events forever and prints `seq id` for each one
    /// reported durable.
    #[command(hide = true)]
    CrashWriter {
        /// The data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Concurrent emitters.
        #[arg(long, default_value_t = 4)]
        producers: usize,
    },
}

/// `campusgw decode ...`
#[derive(Debug, Subcommand)]
pub enum DecodeCmd {
    /// A GB/T 26875.3-2011 frame as hex (spaces allowed): header, ADU and the events it maps to.
    Gb26875 {
        /// The frame bytes in hex, e.g. "40 40 01 00 ...".
        hex: Vec<String>,
    },
}

/// `campusgw bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Durable ingest through the driver context into a fresh journal.
    Ingest {
        /// Total events.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Concurrent producers (each like one driver with many devices).
        #[arg(long, default_value_t = 8)]
        producers: u64,
        /// In-flight events per producer.
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// GB/T 26875.3 upload → confirm latency at the UITD side, idle and with many UITDs,
    /// against an in-process gateway (see `bench_gb26875`).
    Gb26875 {
        /// Simultaneous UITD connections in the load phase.
        #[arg(long, default_value_t = 500)]
        connections: u64,
        /// Uploads per connection in the load phase.
        #[arg(long, default_value_t = 200)]
        frames_per_connection: u64,
        /// Uploads, one at a time, in the idle phase.
        #[arg(long, default_value_t = 2000)]
        idle_frames: u64,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Drain a fresh journal of N mixed-class events through the MQTT uplink (QoS 1).
    Forward {
        /// Total events.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Broker URL: mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        broker: String,
        /// CA file (PEM) for mqtts://.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// In-flight window.
        #[arg(long, default_value_t = 100)]
        inflight: u16,
        /// Directory for the journal (default: the system temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs the parsed command; returns the process exit code.
///
/// # Errors
/// Whatever the command failed with.
pub async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Cmd::Run { config } => run(config).await,
        Cmd::CheckConfig { file } => Ok(check_config(&file)),
        Cmd::Demo {
            data_dir,
            listen,
            duration,
        } => crate::demo::run(data_dir, listen, duration.map(Into::into)).await,
        Cmd::Journal {
            command:
                JournalCmd::Export {
                    data_dir,
                    since,
                    class,
                },
        } => export(&data_dir, since, class),
        Cmd::Journal {
            command:
                JournalCmd::CrashWriter {
                    data_dir,
                    producers,
                },
        } => crash_writer(data_dir, producers).await,
        Cmd::Decode {
            protocol: DecodeCmd::Gb26875 { hex },
        } => match campusgw_gb26875::decode_hex_to_json(&hex.join(" ")) {
            Ok(v) => {
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(0)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(1)
            }
        },
        Cmd::Bench {
            command:
                BenchCmd::Ingest {
                    events,
                    producers,
                    window,
                    data_dir,
                },
        } => bench_ingest(events, producers, window, data_dir).await,
        Cmd::Bench {
            command:
                BenchCmd::Gb26875 {
                    connections,
                    frames_per_connection,
                    idle_frames,
                    data_dir,
                },
        } => {
            crate::bench_gb26875::run(crate::bench_gb26875::BenchOptions {
                connections,
                frames_per_connection,
                idle_frames,
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Forward {
                    events,
                    broker,
                    ca,
                    inflight,
                    data_dir,
                },
        } => {
            crate::uplink::bench::forward(crate::uplink::bench::ForwardBench {
                events,
                broker,
                ca,
                inflight,
                data_dir,
            })
            .await
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<i32> {
    let config = match crate::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("error: {e}");
            return Ok(1);
        }
    };
    let gw = Gateway::start(config, RunOptions::default()).await?;
    wait_for_signal().await;
    tracing::info!("shutdown requested");
    gw.stop().await;
    Ok(0)
}

fn check_config(path: &std::path::Path) -> i32 {
    match crate::config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} devices, {} uplinks)",
                path.display(),
                c.devices.len(),
                c.uplinks.len()
            );
            0
        }
        Err(e) => {
            eprint!("error: {e}");
            1
        }
    }
}

fn export(data_dir: &std::path::Path, since: u64, class: Option<Class>) -> anyhow::Result<i32> {
    let path = data_dir.join("journal.db");
    anyhow::ensure!(path.exists(), "no journal at {}", path.display());
    let reader = crate::journal::JournalReader::open(&path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = since;
    loop {
        let page = reader.after(after, class, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// A driver context over `journal` for in-process producers (bench, crash test, demo).
pub fn local_context(journal: &Journal, device: &str) -> DriverContext {
    let (board, _rx) = HealthBoard::new();
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    DriverContext::new(ContextParts {
        device: DeviceId::new(device).expect("valid bench device id"),
        driver: "bench",
        location: Location::default(),
        sink: Arc::new(journal.clone()),
        health: board,
        commands: Arc::new(tokio::sync::Mutex::new(rx)),
        shutdown: CancellationToken::new(),
    })
}

fn bench_event(i: u64) -> NewEvent {
    let (kind, class) = match i % 10 {
        0 => (kinds::FIRE_ALARM, Class::LifeSafety),
        1 => (kinds::DOOR_FORCED, Class::Security),
        2..=4 => (
            campusgw_sdk::Kind::from_static("access.granted"),
            Class::Business,
        ),
        _ => (kinds::SENSOR_READING, Class::Telemetry),
    };
    NewEvent::new(kind, class)
        .payload(serde_json::json!({ "point": format!("p{}", i % 2000), "value": i }))
}

async fn bench_ingest(
    events: u64,
    producers: u64,
    window: usize,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let tmp = tempfile_dir(data_dir)?;
    let (journal, writer) = Journal::open(JournalOptions::new(tmp.path().join("journal.db")))?;
    let per = events / producers.max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let cx = local_context(&journal, &format!("producer-{p}"));
        tasks.push(tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            for i in 0..per {
                if inflight.len() >= window {
                    inflight.next().await.expect("non-empty")?;
                }
                inflight.push(cx.emit_pipelined(bench_event(i)));
            }
            while let Some(r) = inflight.next().await {
                r?;
            }
            Ok::<(), EmitError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let total = per * producers;
    let batches = journal
        .status()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    eprintln!(
        "{total} events in {batches} transactions ({:.0} events/fsync)",
        total as f64 / batches.max(1) as f64
    );
    println!(
        "{}",
        serde_json::json!({"bench": "ingest", "events": total, "producers": producers, "seconds": secs, "events_per_sec": total as f64 / secs, "durable": true})
    );
    Ok(0)
}

/// A temporary directory (removed on drop) under `base` or the system temp dir.
fn tempfile_dir(base: Option<PathBuf>) -> anyhow::Result<TempDir> {
    let root = base.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root)?;
    let dir = root.join(format!("campusgw-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(TempDir(dir))
}

struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn crash_writer(data_dir: PathBuf, producers: usize) -> anyhow::Result<i32> {
    let (journal, _writer) = Journal::open(JournalOptions::new(data_dir.join("journal.db")))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Receipt>>();
    for p in 0..producers {
        let cx = local_context(&journal, &format!("crash-{p}"));
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            for i in 0u64.. {
                if inflight.len() >= 64 {
                    match inflight.next().await {
                        Some(Ok(r)) => {
                            let _ = tx.send(r);
                        }
                        _ => return,
                    }
                }
                inflight.push(cx.emit_pipelined(bench_event(i)));
            }
        });
    }
    let stdout = std::io::stdout();
    while let Some(first) = rx.recv().await {
        let mut out = stdout.lock();
        for r in std::iter::once(first)
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            .flatten()
        {
            writeln!(out, "{} {}", r.seq, r.id)?;
        }
        out.flush()?;
    }
    Ok(0)
}

//! The `campusgw` command line.

use std::io::Write;
use std::path::PathBuf;

use campusgw_sdk::Class;
use clap::{Parser, Subcommand};

use crate::app::{Gateway, RunOptions, wait_for_signal};

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
    /// Preview a bulk import (CSV or XLSX detector, door or location table) against a
    /// config: rows read, every problem with its row and column, and what would change.
    /// Writes nothing (apply from the console's /import page); exit 0 when the import is
    /// clean, 1 otherwise (docs/console.md).
    Import {
        /// The CSV or XLSX file.
        #[arg(long)]
        preview: PathBuf,
        /// The gateway's TOML config.
        #[arg(long, default_value = "/etc/campusgw/gateway.toml")]
        config: PathBuf,
        /// Print the preview as JSON (`table`, `rows`, `errors`, `diff`, as `POST
        /// /api/v1/import/preview` answers them).
        #[arg(long)]
        json: bool,
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
    /// Uplink tools: events a destination rejected, and asking for them to be resent.
    Uplink {
        /// What to do.
        #[command(subcommand)]
        command: UplinkCmd,
    },
    /// County operator tools: a signing key, and signed commands ready to publish.
    County {
        /// What to do.
        #[command(subcommand)]
        command: CountyCmd,
    },
    /// Decode a captured frame and print it as JSON (a field tool for integrators).
    Decode {
        /// The protocol.
        #[command(subcommand)]
        protocol: DecodeCmd,
    },
    /// Find devices on the LAN and print config snippets to paste into the config.
    Discover {
        /// What to look for.
        #[command(subcommand)]
        what: DiscoverCmd,
    },
    /// Console users (docs/console.md).
    Admin {
        /// What to do.
        #[command(subcommand)]
        command: AdminCmd,
    },
    /// Rule tools: check a rules directory, dry-run events through it.
    Rules {
        /// What to do.
        #[command(subcommand)]
        command: crate::rules_cli::RulesCmd,
    },
    /// Canteen tools: a day's reconciliation from a canteen driver's ledger.
    Canteen {
        /// What to do.
        #[command(subcommand)]
        command: CanteenCmd,
    },
    /// Benchmarks.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        command: BenchCmd,
    },
}

/// `campusgw canteen ...`
#[derive(Debug, Subcommand)]
pub enum CanteenCmd {
    /// Reconciles one local day (`YYYY-MM-DD`) of a canteen ledger and prints it as JSON:
    /// approved and declined sales, totals to the cent per terminal, sales not yet
    /// journaled, and the sync conflicts of that day (never corrected, listed here). Exit 0
    /// when clean, 2 when there are conflicts or unjournaled sales. Safe while the gateway
    /// runs.
    Report {
        /// The day, local to the school.
        #[arg(long)]
        day: String,
        /// The gateway's data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// The canteen device's id.
        #[arg(long, default_value = "canteen")]
        device: String,
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
    /// Copy every readable event of a damaged journal (e.g. `journal.db.damaged-<time>`)
    /// into the live journal, keeping event ids; prints counts as JSON. Stop the gateway
    /// first (it holds the journal's lock).
    Salvage {
        /// The damaged file.
        file: PathBuf,
        /// The gateway's data_dir (its live journal receives the events).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Test aid for the crash test: device-like producers that print what they send and
    /// what was made durable, and retransmit what was not (`bench::crash`).
    #[command(hide = true)]
    CrashWriter {
        /// The data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Concurrent emitters.
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// Stop after this many durable events (forever when absent).
        #[arg(long)]
        events: Option<u64>,
        /// A file of `origin_ref` lines to retransmit first.
        #[arg(long)]
        retransmit: Option<PathBuf>,
    },
}

/// `campusgw uplink ...`
#[derive(Debug, Subcommand)]
pub enum UplinkCmd {
    /// List the events a destination rejected as malformed (kept in the journal), one JSON
    /// object per line: uplink, seq, class, kind, id, reason, rejected_at, retry_requested.
    Rejected {
        /// The gateway's data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this uplink.
        #[arg(long)]
        uplink: Option<String>,
    },
    /// Mark rejected events for resend; the running (or next started) uplink sends them
    /// before anything else of their class and unlists them once delivered. Safe while the
    /// gateway runs.
    RetryRejected {
        /// The gateway's data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// The uplink.
        #[arg(long)]
        uplink: String,
        /// These seqs (repeatable).
        #[arg(long = "seq", required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<u64>,
        /// Every rejected event of the uplink.
        #[arg(long)]
        all: bool,
    },
}

/// `campusgw admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Create a console user or set its password (read from the terminal, or the first
    /// line of standard input). The gateway must be stopped: its journal lock refuses a
    /// second writer; use the one-time setup token while it runs.
    SetPassword {
        /// The gateway's data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// The user.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Its role: admin, operator or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
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
    /// A SIA DC-09 frame as text, with or without its LF / CRC / LEN / CR envelope
    /// (`\n` and `\r` may be written as such): the message, its data and the kinds it maps to.
    Dc09 {
        /// The frame, e.g. "5BA40024\"ADM-CID\"0001L0#1234[#1234|1130 01 015]".
        frame: String,
        /// The account's AES key for an encrypted (`*`) frame: 16, 24 or 32 characters.
        #[arg(long, conflicts_with = "key_hex")]
        key: Option<String>,
        /// The key in hex instead: 32, 48 or 64 digits.
        #[arg(long)]
        key_hex: Option<String>,
    },
}

/// `campusgw discover ...`
#[derive(Debug, Subcommand)]
pub enum DiscoverCmd {
    /// ONVIF cameras (WS-Discovery probe to 239.255.255.250:3702, one hop): prints a
    /// `[[device.camera]]` snippet per camera that answered; exit 1 when none did.
    Onvif {
        /// The IPv4 address of the interface on the camera LAN (default: the one the
        /// kernel routes multicast through).
        #[arg(long)]
        interface: Option<std::net::Ipv4Addr>,
        /// How long to collect answers.
        #[arg(long, default_value = "3s")]
        timeout: humantime::Duration,
    },
}

/// `campusgw county ...` (docs/uplinks.md, "County commands").
#[derive(Debug, Subcommand)]
pub enum CountyCmd {
    /// Create a signing key: writes the private key to a new file (mode 0600) and prints
    /// the base64 public key for a gateway's `[uplink.commands] public_keys`.
    Keygen {
        /// The private key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a signed command for one gateway, ready to publish (QoS 1) on
    /// `{prefix}/{gateway}/commands/{id}` (the topic is printed on stderr).
    Sign {
        /// The private key file from `campusgw county keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The gateway id the command is for.
        #[arg(long)]
        gateway: String,
        /// `status`, `resync` or a device command kind (`relay.set`, ...).
        #[arg(long)]
        kind: String,
        /// The device id or scope (`building:A`, `all`) of a device command.
        #[arg(long)]
        target: Option<String>,
        /// Arguments as a JSON object, e.g. '{"on": true}' or '{"from_seq": 1}'.
        #[arg(long)]
        args: Option<String>,
        /// The command id (default: a fresh `c-<uuid>`).
        #[arg(long)]
        id: Option<String>,
        /// The nonce (default: a fresh random UUID; never reuse one).
        #[arg(long)]
        nonce: Option<String>,
        /// The topic prefix, for the topic printed on stderr.
        #[arg(long, default_value = "campusgw")]
        prefix: String,
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
    /// against an in-process gateway (see `bench::gb26875`).
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
    /// Fire alarm in at a school UITD → confirmed by a simulated city fire-monitoring
    /// centre through the `kind = "gb26875"` uplink, p50/p99 (see `bench::firecentre`).
    Firecentre {
        /// Alarms, one at a time.
        #[arg(long, default_value_t = 200)]
        alarms: u64,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Panic alarm in at a school alarm panel → the police video platform's 200 OK to the
    /// GB/T 28181 Alarm MESSAGE through the `kind = "gb28181"` uplink, p50/p99 (see
    /// `bench::gb28181`).
    Gb28181 {
        /// Alarms, one at a time.
        #[arg(long, default_value_t = 200)]
        alarms: u64,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// SIA DC-09 panel frame → ACK latency, and many supervised panels sustained, against an
    /// in-process gateway (see `bench::dc09`).
    Dc09 {
        /// Alarm frames, one at a time, in the latency phase.
        #[arg(long, default_value_t = 2000)]
        frames: u64,
        /// Their rate, frames per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Supervised panels in the second phase (0 skips it).
        #[arg(long, default_value_t = 0)]
        panels: u64,
        /// Each panel's NULL supervision interval (before `--speedup`).
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        supervision: std::time::Duration,
        /// Divides the supervision interval and timeout (1 = real time).
        #[arg(long, default_value_t = 1.0)]
        speedup: f64,
        /// How long the supervision phase runs (default: three intervals after the speed-up).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// The chance that a panel's NULL is followed by an alarm.
        #[arg(long, default_value_t = 0.05)]
        alarm_ratio: f64,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also forward panic and intrusion alarms to a simulated ARC through the police
        /// uplink (`kind = "dc09"`) and time panel → ARC.
        #[arg(long)]
        arc: bool,
    },
    /// Lockdown of every simulated ISAPI door, and access event in → journaled (see
    /// `bench::access`).
    Access {
        /// Simulated controllers.
        #[arg(long, default_value_t = 4)]
        controllers: u32,
        /// Doors per controller.
        #[arg(long, default_value_t = 50)]
        doors: u32,
        /// Lockdown rounds.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Access events.
        #[arg(long, default_value_t = 500)]
        events: usize,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also this many ZKTeco PUSH doors (10 per simulated controller, RequestDelay 1 s).
        #[arg(long, default_value_t = 0)]
        zkteco: u32,
    },
    /// 2,000 doors configured (ISAPI and ZKTeco simulators): the gateway's RSS as a child
    /// process and access event in → journaled p50/p99 (see `bench::access_scale`).
    AccessScale {
        /// Simulated ISAPI controllers.
        #[arg(long, default_value_t = 20)]
        isapi_controllers: u32,
        /// Doors per ISAPI controller.
        #[arg(long, default_value_t = 50)]
        isapi_doors: u32,
        /// ZKTeco PUSH doors (10 per simulated controller).
        #[arg(long, default_value_t = 1000)]
        zkteco_doors: u32,
        /// Access event samples (each of ISAPI and ZKTeco).
        #[arg(long, default_value_t = 500)]
        events: usize,
        /// Directory for the gateway's data (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// A canteen lunch rush against the gateway as a child process: approval p50/p99 and
    /// the child's RSS with the card list loaded (see `bench::canteen`).
    Canteen {
        /// Simulated terminals.
        #[arg(long, default_value_t = 20)]
        terminals: u32,
        /// Meals in all.
        #[arg(long, default_value_t = 2000)]
        meals: u64,
        /// Cards in the synced list.
        #[arg(long, default_value_t = 20_000)]
        cards: usize,
        /// The rush's length; "0s" sells as fast as answers come.
        #[arg(long, default_value = "10m")]
        window: humantime::Duration,
        /// Directory for the gateway's data (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// ONVIF cameras subscribed at once (the gateway's RSS and CPU as a child process) and
    /// fire alarm → the zone's snapshots stored p50/p99 (see `bench::video`).
    Video {
        /// Simulated cameras in all.
        #[arg(long, default_value_t = 500)]
        cameras: usize,
        /// Cameras in the alarm's zone.
        #[arg(long, default_value_t = 4)]
        zone_cameras: usize,
        /// Fire alarm → snapshots samples.
        #[arg(long, default_value_t = 50)]
        samples: usize,
        /// Seconds of the steady CPU window after every camera subscribed.
        #[arg(long, default_value_t = 20)]
        steady_secs: u64,
        /// Directory for the gateway's data (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Fire alarm → alarm on a console client's live stream (SSE), with a gateway child
    /// process under background telemetry: p50/p99 (see `bench::console`).
    Console {
        /// Alarms measured, one at a time.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        /// Background telemetry events per second (GB/T 26875 analog values).
        #[arg(long, default_value_t = 1000)]
        telemetry_rate: u64,
        /// UITD connections carrying the telemetry.
        #[arg(long, default_value_t = 10)]
        uitds: u64,
        /// Milliseconds between alarms.
        #[arg(long, default_value_t = 100)]
        alarm_every_ms: u64,
        /// Classes the stream asks for (the alarm board's by default; "" for all).
        #[arg(long, default_value = "life_safety,security,operations")]
        classes: String,
        /// Directory for the gateway's data (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Fire alarm (Modbus edge) → door command at the simulated device, through the journal
    /// and the rules runner: p50/p99 idle and under background load (see `bench::linkage`).
    Linkage {
        /// Samples per phase.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        /// Background events per second in the load phase.
        #[arg(long, default_value_t = 10_000)]
        load_rate: u64,
        /// Directory for the journal (default: a temporary directory on the data disk).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Alarm append latency while retention deletes a large expired backlog.
    Retention {
        /// Expired events to delete.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Directory for the journal (default: the system temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Start-to-ready of a gateway whose journal holds N undelivered events.
    Startup {
        /// Events in the journal (filled once, reused on later runs).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Start/stop cycles measured.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// The data_dir holding the journal (kept, so later runs skip the fill).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Events/s through the rules engine on one thread: generated rules, the demo's kind mix.
    Rules {
        /// Generated rules (70 % kind + location, 20 % with a CEL condition, 10 % windows,
        /// confirmation or absence).
        #[arg(long, default_value_t = 1_000)]
        rules: usize,
        /// Events evaluated.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Generated pack: `campus` (realistic, many buildings) or `dense` (the first
        /// generator, most rules of a kind act on most of its events).
        #[arg(long, default_value = "campus")]
        pack: campusgw_rules::bench::Pack,
    },
    /// Alarm latency across a broker outage: a real mosquitto stopped for `--outage`
    /// seconds while alarms and telemetry are journaled, then restarted; broker back ->
    /// first / all alarms delivered p50/p99, drain rate, connect attempts with only
    /// telemetry pending (see `bench::outage`).
    Outage {
        /// Runs.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds the broker stays away.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        outage: std::time::Duration,
        /// Fire alarms journaled during the outage.
        #[arg(long, default_value_t = 20)]
        alarms: u64,
        /// Telemetry events journaled during the outage.
        #[arg(long, default_value_t = 100_000)]
        telemetry: u64,
        /// The mosquitto executable (default: on the PATH, else /usr/sbin/mosquitto).
        #[arg(long)]
        mosquitto: Option<PathBuf>,
        /// Directory for the journals (default: the system temp dir).
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
        Cmd::Import {
            preview,
            config,
            json,
        } => import_preview(&preview, &config, json),
        Cmd::Rules { command } => crate::rules_cli::run(command),
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
            command: JournalCmd::Salvage { file, data_dir },
        } => salvage(&file, &data_dir),
        Cmd::Journal {
            command:
                JournalCmd::CrashWriter {
                    data_dir,
                    producers,
                    events,
                    retransmit,
                },
        } => {
            let o = crate::bench::crash::CrashOptions {
                producers,
                events,
                retransmit,
            };
            crate::bench::crash::crash_writer(data_dir, o).await
        }
        Cmd::Admin {
            command:
                AdminCmd::SetPassword {
                    data_dir,
                    user,
                    role,
                },
        } => {
            let role = crate::console::auth::Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("role {role:?}: expected admin, operator or viewer")
            })?;
            let password = crate::console::admin::read_password()?;
            crate::console::admin::set_password(&data_dir, &user, role, &password).await?;
            Ok(0)
        }
        Cmd::Canteen {
            command:
                CanteenCmd::Report {
                    day,
                    data_dir,
                    device,
                },
        } => Ok(canteen_report(&data_dir, &device, &day)),
        Cmd::Uplink {
            command: UplinkCmd::Rejected { data_dir, uplink },
        } => uplink_rejected(&data_dir, uplink.as_deref()),
        Cmd::Uplink {
            command:
                UplinkCmd::RetryRejected {
                    data_dir,
                    uplink,
                    seqs,
                    all,
                },
        } => uplink_retry_rejected(&data_dir, &uplink, seqs, all),
        Cmd::County {
            command: CountyCmd::Keygen { out },
        } => county_keygen(&out),
        Cmd::County {
            command:
                CountyCmd::Sign {
                    key,
                    gateway,
                    kind,
                    target,
                    args,
                    id,
                    nonce,
                    prefix,
                },
        } => county_sign(CountySign {
            key,
            gateway,
            kind,
            target,
            args,
            id,
            nonce,
            prefix,
        }),
        Cmd::Discover {
            what: DiscoverCmd::Onvif { interface, timeout },
        } => discover_onvif(interface, timeout.into()).await,
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
        Cmd::Decode {
            protocol:
                DecodeCmd::Dc09 {
                    frame,
                    key,
                    key_hex,
                },
        } => {
            use campusgw_dc09::{Key, KeyEncoding};
            let key = match (key, key_hex) {
                (Some(k), _) => Some(Key::parse(&k, KeyEncoding::Text)),
                (None, Some(k)) => Some(Key::parse(&k, KeyEncoding::Hex)),
                (None, None) => None,
            }
            .transpose();
            match key.and_then(|k| campusgw_dc09::inspect::decode_to_json(&frame, k.as_ref())) {
                Ok(v) => {
                    println!("{}", serde_json::to_string(&v)?);
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(1)
                }
            }
        }
        Cmd::Bench {
            command:
                BenchCmd::Ingest {
                    events,
                    producers,
                    window,
                    data_dir,
                },
        } => crate::bench::ingest::bench_ingest(events, producers, window, data_dir).await,
        Cmd::Bench {
            command: BenchCmd::Gb28181 { alarms, data_dir },
        } => {
            crate::bench::gb28181::run(crate::bench::gb28181::BenchOptions { alarms, data_dir })
                .await
        }
        Cmd::Bench {
            command: BenchCmd::Firecentre { alarms, data_dir },
        } => {
            crate::bench::firecentre::run(crate::bench::firecentre::BenchOptions {
                alarms,
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Gb26875 {
                    connections,
                    frames_per_connection,
                    idle_frames,
                    data_dir,
                },
        } => {
            crate::bench::gb26875::run(crate::bench::gb26875::BenchOptions {
                connections,
                frames_per_connection,
                idle_frames,
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Dc09 {
                    frames,
                    rate,
                    panels,
                    supervision,
                    speedup,
                    duration,
                    alarm_ratio,
                    data_dir,
                    arc,
                },
        } => {
            crate::bench::dc09::run(crate::bench::dc09::BenchOptions {
                frames,
                rate,
                panels,
                supervision,
                speedup,
                duration,
                alarm_ratio,
                data_dir,
                arc,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Access {
                    controllers,
                    doors,
                    rounds,
                    events,
                    data_dir,
                    zkteco,
                },
        } => {
            crate::bench::access::run(crate::bench::access::BenchOptions {
                controllers,
                doors,
                rounds,
                events,
                data_dir,
                zkteco,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::AccessScale {
                    isapi_controllers,
                    isapi_doors,
                    zkteco_doors,
                    events,
                    data_dir,
                },
        } => {
            crate::bench::access_scale::run(crate::bench::access_scale::BenchOptions {
                isapi_controllers,
                isapi_doors,
                zkteco_doors,
                events,
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Canteen {
                    terminals,
                    meals,
                    cards,
                    window,
                    data_dir,
                },
        } => {
            crate::bench::canteen::run(crate::bench::canteen::BenchOptions {
                terminals,
                meals,
                cards,
                window: window.into(),
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Video {
                    cameras,
                    zone_cameras,
                    samples,
                    steady_secs,
                    data_dir,
                },
        } => {
            crate::bench::video::run(crate::bench::video::BenchOptions {
                cameras,
                zone_cameras,
                samples,
                steady_secs,
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Console {
                    samples,
                    telemetry_rate,
                    uitds,
                    alarm_every_ms,
                    classes,
                    data_dir,
                },
        } => {
            crate::bench::console::run(crate::bench::console::BenchOptions {
                samples,
                telemetry_rate,
                uitds,
                alarm_every: std::time::Duration::from_millis(alarm_every_ms),
                classes,
                data_dir,
            })
            .await
        }
        Cmd::Bench {
            command:
                BenchCmd::Linkage {
                    samples,
                    load_rate,
                    data_dir,
                },
        } => crate::bench::linkage::run(samples, load_rate, data_dir).await,
        Cmd::Bench {
            command:
                BenchCmd::Rules {
                    rules,
                    events,
                    pack,
                },
        } => crate::bench::rules::run(rules, events, pack),
        Cmd::Bench {
            command: BenchCmd::Retention { events, data_dir },
        } => crate::bench::retention::run(events, data_dir).await,
        Cmd::Bench {
            command:
                BenchCmd::Startup {
                    events,
                    runs,
                    data_dir,
                },
        } => crate::bench::startup::run(events, runs, data_dir).await,
        Cmd::Bench {
            command:
                BenchCmd::Outage {
                    runs,
                    outage,
                    alarms,
                    telemetry,
                    mosquitto,
                    data_dir,
                },
        } => {
            crate::bench::outage::run(crate::bench::outage::BenchOptions {
                runs,
                outage,
                alarms,
                telemetry,
                mosquitto,
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

async fn discover_onvif(
    interface: Option<std::net::Ipv4Addr>,
    timeout: std::time::Duration,
) -> anyhow::Result<i32> {
    use campusgw_onvif::discovery;
    let interface = match interface {
        Some(i) => i,
        None => match discovery::default_interface() {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: no interface to probe from ({e}); give --interface ADDRESS");
                return Ok(2);
            }
        },
    };
    let found = match discovery::discover(interface, timeout).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot probe from {interface}: {e}");
            return Ok(2);
        }
    };
    let wait = humantime::format_duration(timeout);
    if found.is_empty() {
        eprintln!(
            "no ONVIF camera answered on {interface} within {wait} (is the camera on this \
             interface's LAN, with discovery enabled? is multicast filtered?)"
        );
        return Ok(1);
    }
    print!("{}", discovery::config_snippet(&found));
    eprintln!(
        "{} camera(s) answered on {interface} within {wait}; paste the entries under a \
         [[device]] with driver = \"onvif\"",
        found.len()
    );
    Ok(0)
}

fn county_keygen(out: &std::path::Path) -> anyhow::Result<i32> {
    use crate::uplink::county_commands as cc;
    let key = cc::generate_key()?;
    cc::write_key_file(out, &key)?;
    println!("{}", cc::public_key_b64(&key));
    eprintln!(
        "private key written to {} (mode 0600); put the line above in the gateway's [uplink.commands] public_keys",
        out.display()
    );
    Ok(0)
}

struct CountySign {
    key: PathBuf,
    gateway: String,
    kind: String,
    target: Option<String>,
    args: Option<String>,
    id: Option<String>,
    nonce: Option<String>,
    prefix: String,
}

fn county_sign(a: CountySign) -> anyhow::Result<i32> {
    use crate::uplink::county_commands as cc;
    let key = cc::read_key_file(&a.key)?;
    let args: serde_json::Value = match &a.args {
        Some(t) => {
            serde_json::from_str(t).map_err(|e| anyhow::anyhow!("--args is not JSON: {e}"))?
        }
        None => serde_json::json!({}),
    };
    if !args.is_object() {
        anyhow::bail!("--args must be a JSON object");
    }
    let id =
        a.id.unwrap_or_else(|| format!("c-{}", uuid::Uuid::new_v4().simple()));
    let nonce = a.nonce.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut body = serde_json::json!({
        "gateway": a.gateway,
        "id": id,
        "kind": a.kind,
        "issued_at": chrono::Utc::now(),
        "nonce": nonce,
        "args": args,
    });
    if let Some(t) = a.target {
        body["target"] = serde_json::Value::String(t);
    }
    let msg = cc::sign(&body, &key);
    std::io::stdout().write_all(&msg)?;
    println!();
    eprintln!(
        "publish (QoS 1) on: {}/{}/commands/{id}",
        a.prefix, a.gateway
    );
    Ok(0)
}

async fn run(path: PathBuf) -> anyhow::Result<i32> {
    let config = match crate::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("error: {e}");
            return Ok(1);
        }
    };
    let fault = match crate::app::FaultPlan::from_env() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let opts = RunOptions {
        fault,
        ..RunOptions::default()
    };
    let gw = Gateway::start(config, opts).await?;
    let code = tokio::select! {
        () = wait_for_signal() => {
            tracing::info!("shutdown requested");
            0
        }
        reason = gw.failed() => {
            tracing::error!(reason = %reason, "stopping: the gateway cannot go on");
            crate::app::EXIT_GATEWAY_FAILED
        }
    };
    gw.stop().await;
    Ok(code)
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

fn import_preview(
    file: &std::path::Path,
    config: &std::path::Path,
    json: bool,
) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let name = file.to_string_lossy();
    let format = crate::import::Format::guess(&name)
        .with_context(|| format!("{name}: expected a .csv or .xlsx file"))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {name}"))?;
    let base =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let sheet = crate::import::Sheet::read(&bytes, format).with_context(|| name.to_string())?;
    let p = crate::import::preview(&base, config, &sheet)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", p.report(&name));
    }
    Ok(i32::from(!p.errors.is_empty()))
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
    if reader.corrupt_seen() > 0 {
        eprintln!(
            "warning: {} stored rows could not be decoded and were skipped (the gateway quarantines them when it reads them)",
            reader.corrupt_seen()
        );
    }
    Ok(0)
}

fn journal_path(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("journal.db");
    anyhow::ensure!(path.exists(), "no journal at {}", path.display());
    Ok(path)
}

fn uplink_rejected(data_dir: &std::path::Path, uplink: Option<&str>) -> anyhow::Result<i32> {
    let list = crate::journal::rejected::RejectedReader::open(&journal_path(data_dir)?)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in list.list(uplink)? {
        serde_json::to_writer(&mut out, &r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(0)
}

fn uplink_retry_rejected(
    data_dir: &std::path::Path,
    uplink: &str,
    seqs: Vec<u64>,
    all: bool,
) -> anyhow::Result<i32> {
    use crate::journal::rejected::{RetrySelection, request_retry};
    let which = if all {
        RetrySelection::All
    } else {
        RetrySelection::Seqs(seqs)
    };
    let marked = request_retry(&journal_path(data_dir)?, uplink, &which)?;
    println!(
        "{}",
        serde_json::json!({"uplink": uplink, "marked": marked})
    );
    if marked == 0 {
        eprintln!("error: no rejected event of uplink {uplink:?} matched");
        return Ok(1);
    }
    Ok(0)
}

fn salvage(file: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<i32> {
    match crate::journal::salvage::salvage(file, data_dir) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

/// `campusgw canteen report`: prints the day's reconciliation; 0 clean, 2 with conflicts or
/// unjournaled sales, 1 on error.
fn canteen_report(data_dir: &std::path::Path, device: &str, day: &str) -> i32 {
    if chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
        eprintln!("error: --day {day:?} is not a date; write YYYY-MM-DD, e.g. 2026-12-03");
        return 1;
    }
    let path = data_dir.join(format!("canteen-{device}.db"));
    if !path.is_file() {
        eprintln!(
            "error: no canteen ledger at {} (is --device the canteen device's id?)",
            path.display()
        );
        return 1;
    }
    let report = campusgw_canteen::ledger::Ledger::open(&path).and_then(|l| l.report(day));
    match report {
        Ok(r) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&r).unwrap_or_else(|e| e.to_string())
            );
            if r.conflicts.is_empty() && r.unjournaled == 0 {
                0
            } else {
                2
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

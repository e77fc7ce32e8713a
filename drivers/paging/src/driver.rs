//! The sip_paging driver's run loop and the command dispatcher both drivers share.
//!
//! The dispatcher maps each `broadcast.play` / `broadcast.stop` to the zones it addresses,
//! resolves the message to the zone's program (the zone's building picks the `{building}`
//! clip) and answers once every zone has. Commands are handled in their own tasks, so a zone
//! waiting for slow speakers never holds up a command for another zone. Events go through
//! one emitter task, in the order the zones produced them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use campusgw_sdk::config::suggest;
use campusgw_sdk::{
    CommandKind, CommandRequest, CommandStatus, DeviceId, Driver, DriverContext, DriverError,
    Target,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::{PlayArgs, StopArgs};
use crate::config::SipPagingConfig;
use crate::messages::Library;
use crate::player::{Events, Outcome, Reach, Report, Zone, ZoneMsg, run_zone};
use crate::priority::Entry;
use crate::sip::{Offer, SipEndpoint};

/// The running sip_paging driver (built by [`SipPagingConfig`]).
#[derive(Debug)]
pub struct SipPagingDriver {
    config: SipPagingConfig,
    bind: SocketAddr,
    library: Arc<Library>,
    instance: DeviceId,
}

impl SipPagingDriver {
    pub(crate) fn new(
        config: SipPagingConfig,
        bind: SocketAddr,
        library: Library,
        instance: DeviceId,
    ) -> SipPagingDriver {
        SipPagingDriver {
            config,
            bind,
            library: Arc::new(library),
            instance,
        }
    }
}

impl Driver for SipPagingDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        // Everything spawned below ends with this run (shutdown, an error return, or the
        // supervisor dropping it), so a restart never leaves a second set of zones behind.
        let local = cx.shutdown().child_token();
        let _stop_tasks = local.clone().drop_guard();
        let ep = SipEndpoint::bind(self.bind, &self.config.user).await?;
        tokio::spawn(ep.clone().serve(local.clone()));
        let events = spawn_emitter(cx.clone());
        let mut d = Dispatcher::new(self.instance.clone(), self.library.clone());
        for z in &self.config.zone {
            let socket = UdpSocket::bind(SocketAddr::new(self.bind.ip(), 0)).await?;
            let offer = Offer {
                rtp_port: socket.local_addr()?.port(),
                codecs: self.config.codecs.clone(),
                timeout: self.config.answer_timeout.0,
            };
            let speakers = z
                .speakers
                .iter()
                .filter_map(|s| s.target(self.config.profile))
                .collect();
            let zone = Zone {
                id: z.device.clone(),
                location: z.location.clone().unwrap_or_default(),
                reach: Reach::Sip {
                    ep: ep.clone(),
                    speakers,
                    offer,
                    retry: self.config.retry,
                },
                socket,
            };
            d.spawn_zone(zone, &events, &local);
        }
        tracing::info!(sip = %ep.local_addr(), zones = self.config.zone.len(), "sip_paging ready");
        d.serve(&cx).await;
        Ok(())
    }
}

/// Journals the zones' events in order; failures are logged (they are not device acks).
pub(crate) fn spawn_emitter(cx: DriverContext) -> Events {
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            match r {
                Report::Event(e) => {
                    if let Err(err) = cx.emit(e).await {
                        tracing::warn!(error = %err, "broadcast event not journaled");
                    }
                }
                Report::Health(zone, h) => cx.report_health(&zone, h),
            }
        }
    });
    tx
}

struct ZoneHandle {
    tx: mpsc::Sender<ZoneMsg>,
    building: Option<String>,
}

/// Routes commands to zones.
pub(crate) struct Dispatcher {
    instance: DeviceId,
    library: Arc<Library>,
    zones: BTreeMap<DeviceId, ZoneHandle>,
}

impl Dispatcher {
    pub(crate) fn new(instance: DeviceId, library: Arc<Library>) -> Dispatcher {
        Dispatcher {
            instance,
            library,
            zones: BTreeMap::new(),
        }
    }

    pub(crate) fn spawn_zone(&mut self, zone: Zone, events: &Events, stop: &CancellationToken) {
        let (tx, rx) = mpsc::channel(16);
        self.zones.insert(
            zone.id.clone(),
            ZoneHandle {
                tx,
                building: zone.location.building.clone(),
            },
        );
        tokio::spawn(run_zone(zone, rx, events.clone(), stop.clone()));
    }

    pub(crate) async fn serve(self, cx: &DriverContext) {
        let me = Arc::new(self);
        while let Some(req) = cx.next_command().await {
            tokio::spawn(me.clone().handle(req));
        }
    }

    async fn handle(self: Arc<Self>, req: CommandRequest) {
        let kind = req.command.kind.clone();
        let (status, detail) = if kind == CommandKind::BROADCAST_PLAY {
            self.play(&req).await
        } else if kind == CommandKind::BROADCAST_STOP {
            self.stop(&req).await
        } else {
            (
                CommandStatus::Unsupported,
                format!("a broadcast zone does not take {kind}"),
            )
        };
        req.respond(status, detail);
    }

    /// The zones a request addresses, or the status to answer with.
    fn zones_of(
        &self,
        req: &CommandRequest,
        listed: Option<&Vec<String>>,
    ) -> Result<Vec<DeviceId>, (CommandStatus, String)> {
        if req.device != self.instance {
            return Ok(vec![req.device.clone()]);
        }
        match (listed, &req.command.target) {
            (Some(list), _) => list
                .iter()
                .map(|z| {
                    DeviceId::new(z.clone())
                        .ok()
                        .filter(|d| self.zones.contains_key(d))
                        .ok_or_else(|| (CommandStatus::Rejected, format!("unknown zone {z:?}")))
                })
                .collect(),
            // The zones are devices in the scope too and answer for themselves.
            (None, Target::Scope(_)) => Err((
                CommandStatus::Unsupported,
                "the paging driver's zones answer scope commands themselves".to_owned(),
            )),
            (None, Target::Device(_)) => Ok(self.zones.keys().cloned().collect()),
        }
    }

    async fn play(&self, req: &CommandRequest) -> (CommandStatus, String) {
        let args: PlayArgs = match serde_json::from_value(req.command.args.clone()) {
            Ok(a) => a,
            Err(e) => {
                return (
                    CommandStatus::Rejected,
                    format!("bad broadcast.play args: {e}"),
                );
            }
        };
        let Some(m) = self.library.entry(&args.message) else {
            let hint = suggest(&args.message, self.library.names())
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            return (
                CommandStatus::Rejected,
                format!("unknown message {:?}{hint}", args.message),
            );
        };
        let zones = match self.zones_of(req, args.zones.as_ref()) {
            Ok(z) => z,
            Err(e) => return e,
        };
        let entry = Entry {
            command: req.command.id,
            message: args.message.clone(),
            priority: args.priority.unwrap_or(m.priority),
            on_preempted: m.on_preempted,
            cycles: args.repeat.cycles(),
        };
        let mut waits = Vec::new();
        for z in zones {
            let Some(h) = self.zones.get(&z) else {
                continue;
            };
            let Some(program) = self.library.program(&args.message, h.building.as_deref()) else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            let msg = ZoneMsg::Play {
                entry: entry.clone(),
                program: program.clone(),
                reply,
            };
            if h.tx.send(msg).await.is_ok() {
                waits.push((z, rx));
            }
        }
        gather(waits).await
    }

    async fn stop(&self, req: &CommandRequest) -> (CommandStatus, String) {
        let args: StopArgs = match serde_json::from_value(req.command.args.clone()) {
            Ok(a) => a,
            Err(_) if req.command.args.is_null() => StopArgs::default(),
            Err(e) => {
                return (
                    CommandStatus::Rejected,
                    format!("bad broadcast.stop args: {e}"),
                );
            }
        };
        let zones = match self.zones_of(req, args.zones.as_ref()) {
            Ok(z) => z,
            Err(e) => return e,
        };
        let mut waits = Vec::new();
        for z in zones {
            let Some(h) = self.zones.get(&z) else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            let msg = ZoneMsg::Stop {
                message: args.message.clone(),
                reply,
            };
            if h.tx.send(msg).await.is_ok() {
                waits.push((z, rx));
            }
        }
        gather(waits).await
    }
}

/// One status for several zones: succeeded if any zone succeeded, else the first failure.
async fn gather(waits: Vec<(DeviceId, oneshot::Receiver<Outcome>)>) -> (CommandStatus, String) {
    if waits.is_empty() {
        return (CommandStatus::Rejected, "no zone to play on".to_owned());
    }
    let single = waits.len() == 1;
    let mut status = None;
    let mut details = Vec::new();
    for (z, rx) in waits {
        let o = rx.await.unwrap_or(Outcome {
            status: CommandStatus::Failed,
            detail: "zone stopped".to_owned(),
        });
        if o.status == CommandStatus::Succeeded || status.is_none() {
            status = Some(o.status);
        }
        details.push(if single {
            o.detail
        } else {
            format!("{z}: {}", o.detail)
        });
    }
    (status.unwrap_or(CommandStatus::Failed), details.join("; "))
}

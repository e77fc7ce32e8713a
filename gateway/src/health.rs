//! Device health: driver reports and silence timeouts become `device.online` /
//! `device.offline` events (DESIGN §4 "Supervision").
//!
//! Drivers call [`HealthSink::report`] and [`HealthSink::activity`] synchronously from
//! their hot paths; the board records the change under a short lock and hands the event
//! to one task that journals it, so a driver never waits on health bookkeeping.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use campusgw_sdk::driver::{DeviceHealth, HealthSink};
use campusgw_sdk::event::kinds;
use campusgw_sdk::{Class, DeviceId, Event, Location, NewEvent};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::journal::Journal;

/// What the board knows of one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// The driver kind serving it.
    pub driver: &'static str,
    /// `unknown` until the first report or activity, then `online` / `degraded` / `offline`.
    pub state: &'static str,
    /// Why it is degraded or offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    last_activity: Option<Instant>,
    #[serde(skip)]
    offline_after: Option<Duration>,
    #[serde(skip)]
    location: Location,
}

/// Device states and the channel their changes are journaled through.
pub struct HealthBoard {
    devices: Mutex<BTreeMap<DeviceId, DeviceStatus>>,
    tx: mpsc::UnboundedSender<Event>,
}

impl HealthBoard {
    /// A board for the given devices; returns the receiver of events to journal.
    pub fn new() -> (Arc<HealthBoard>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(HealthBoard {
                devices: Mutex::default(),
                tx,
            }),
            rx,
        )
    }

    /// Registers a device with its silence timeout.
    pub fn register(
        &self,
        device: DeviceId,
        driver: &'static str,
        location: Location,
        offline_after: Option<Duration>,
    ) {
        let st = DeviceStatus {
            driver,
            state: "unknown",
            reason: None,
            last_activity: None,
            offline_after,
            location,
        };
        self.lock().insert(device, st);
    }

    /// A snapshot for `/healthz`.
    pub fn snapshot(&self) -> BTreeMap<DeviceId, DeviceStatus> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<DeviceId, DeviceStatus>> {
        // A poisoned lock only means a panic elsewhere mid-update of plain data.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn transition(
        &self,
        device: &DeviceId,
        st: &mut DeviceStatus,
        to: &'static str,
        reason: Option<String>,
    ) {
        let was = st.state;
        st.state = to;
        st.reason.clone_from(&reason);
        let (kind, class) = match (was, to) {
            (w, "offline") if w != "offline" => (kinds::DEVICE_OFFLINE, Class::Security),
            ("offline" | "unknown", "online" | "degraded") => {
                (kinds::DEVICE_ONLINE, Class::Operations)
            }
            _ => return,
        };
        metrics::gauge!("device_online", "device" => device.to_string()).set(if to == "offline" {
            0.0
        } else {
            1.0
        });
        tracing::info!(device = %device, from = was, to, reason = reason.as_deref().unwrap_or(""), "device state changed");
        let payload = serde_json::json!({ "from": was, "to": to, "reason": reason });
        let ev = Event::stamp(
            NewEvent::new(kind, class).payload(payload),
            device,
            st.driver,
            &st.location,
        );
        let _ = self.tx.send(ev);
    }

    /// Marks devices silent past their timeout offline; returns how many changed.
    pub fn check_silence(&self, now: Instant) -> usize {
        let mut n = 0;
        for (id, st) in self.lock().iter_mut() {
            let (Some(limit), Some(last)) = (st.offline_after, st.last_activity) else {
                continue;
            };
            if st.state != "offline" && now.duration_since(last) > limit {
                let reason = format!("silent for more than {}", humantime::format_duration(limit));
                self.transition(id, st, "offline", Some(reason));
                n += 1;
            }
        }
        n
    }
}

impl HealthSink for HealthBoard {
    fn report(&self, device: &DeviceId, health: DeviceHealth) {
        let mut map = self.lock();
        let Some(st) = map.get_mut(device) else {
            return;
        };
        if matches!(health, DeviceHealth::Online | DeviceHealth::Degraded(_)) {
            st.last_activity = Some(Instant::now());
        }
        match health {
            DeviceHealth::Online => self.transition(device, st, "online", None),
            DeviceHealth::Degraded(r) => self.transition(device, st, "degraded", Some(r)),
            DeviceHealth::Offline(r) => self.transition(device, st, "offline", Some(r)),
        }
    }

    fn activity(&self, device: &DeviceId) {
        let mut map = self.lock();
        let Some(st) = map.get_mut(device) else {
            return;
        };
        st.last_activity = Some(Instant::now());
        if matches!(st.state, "offline" | "unknown") {
            self.transition(device, st, "online", None);
        }
    }
}

/// Journals health events and checks silence every `tick` until shutdown.
pub async fn run(
    board: Arc<HealthBoard>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    journal: Journal,
    tick: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            Some(ev) = rx.recv() => {
                let mut batch = vec![ev];
                while let Ok(more) = rx.try_recv() { batch.push(more); }
                if let Err(e) = journal.append(batch).await {
                    tracing::warn!(error = %e, "device health events not journaled");
                }
            }
            _ = interval.tick() => { board.check_silence(Instant::now()); }
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_then_activity_goes_offline_then_online_once_each() {
        let (board, mut rx) = HealthBoard::new();
        let id = DeviceId::new("panel").unwrap();
        board.register(
            id.clone(),
            "modbus_tcp",
            Location::default(),
            Some(Duration::from_secs(5)),
        );
        board.activity(&id);
        assert_eq!(rx.try_recv().unwrap().kind.as_str(), "device.online");
        let later = Instant::now() + Duration::from_secs(6);
        assert_eq!(board.check_silence(later), 1);
        assert_eq!(board.check_silence(later), 0, "offline is reported once");
        let off = rx.try_recv().unwrap();
        assert_eq!(
            (off.kind.as_str(), off.class),
            ("device.offline", Class::Security)
        );
        board.activity(&id);
        assert_eq!(rx.try_recv().unwrap().kind.as_str(), "device.online");
        board.report(&id, DeviceHealth::Degraded("exception 2".into()));
        assert!(
            rx.try_recv().is_err(),
            "degraded while online is not an online/offline change"
        );
        board.report(&id, DeviceHealth::Offline("connection refused".into()));
        assert_eq!(
            rx.try_recv().unwrap().payload["reason"],
            "connection refused"
        );
    }
}

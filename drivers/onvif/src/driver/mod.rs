//! The running driver: one task per camera, one command loop.
//!
//! Each camera task owns its session (clock, services, profiles, subscription) and its
//! reconnects with back-off, so a camera that faults, hangs or sends garbage only ever
//! delays itself. Snapshot commands run in their own tasks for the same reason.

mod camera;
mod snap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use campusgw_sdk::{
    BuildError, CommandKind, CommandStatus, DeviceId, Driver, DriverContext, DriverError, Location,
};
use reqwest::Url;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::OnvifConfig;
use crate::snapshot::Store;

/// One configured camera, with its password read.
#[derive(Clone)]
pub struct Camera {
    /// Sub-device id.
    pub device: DeviceId,
    /// Location.
    pub location: Option<Location>,
    /// Device service URL.
    pub xaddr: Url,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Plain http allowed off loopback.
    pub allow_http: bool,
}

impl std::fmt::Debug for Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Camera")
            .field("device", &self.device)
            .field("xaddr", &self.xaddr.as_str())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What the driver knows about one camera now, for the console and the county.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CameraStatus {
    /// Whether a session (and subscription) is up.
    pub connected: bool,
    /// Last error, if not connected.
    pub last_error: Option<String>,
    /// Camera clock minus gateway clock, seconds.
    pub clock_skew_s: Option<i64>,
    /// RTSP link per profile token.
    pub streams: Vec<StreamLink>,
    /// Snapshot URI of the first profile.
    pub snapshot_uri: Option<String>,
    /// The camera's topics (GetEventProperties) that map to campusgw kinds: what its
    /// analytics can report. Empty when the camera does not say.
    pub analytics_topics: Vec<String>,
    /// Known analytics property states (topic|source → active).
    pub properties: Vec<(String, bool)>,
    /// PullPoint subscriptions created so far (re-creations after reboots included).
    pub subscriptions: u64,
}

/// One RTSP link.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamLink {
    /// Profile token.
    pub profile: String,
    /// Profile name.
    pub name: String,
    /// `rtsp://` URI as the camera gave it.
    pub uri: String,
}

/// Every camera's status, readable while the driver runs.
#[derive(Debug, Default)]
pub struct StatusBoard {
    cameras: Mutex<HashMap<String, CameraStatus>>,
}

impl StatusBoard {
    /// One camera's status.
    pub fn camera(&self, device: &str) -> Option<CameraStatus> {
        self.lock().get(device).cloned()
    }

    pub(crate) fn update(&self, device: &DeviceId, f: impl FnOnce(&mut CameraStatus)) {
        f(self.lock().entry(device.as_str().to_owned()).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CameraStatus>> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.cameras.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `onvif` driver.
pub struct OnvifDriver {
    config: OnvifConfig,
    cameras: Vec<Camera>,
    store: Store,
    http: reqwest::Client,
    board: Arc<StatusBoard>,
}

impl OnvifDriver {
    pub(crate) fn new(
        config: OnvifConfig,
        cameras: Vec<Camera>,
        dir: PathBuf,
    ) -> Result<OnvifDriver, BuildError> {
        let http = crate::client::http_client().map_err(BuildError::Invalid)?;
        let store = Store {
            dir,
            max_total_bytes: config.snapshots.max_total_bytes,
            max_age: config.snapshots.max_age.0,
        };
        Ok(OnvifDriver {
            config,
            cameras,
            store,
            http,
            board: Arc::default(),
        })
    }

    /// The live status of every camera (RTSP links, connection, skew), shared with the
    /// running driver.
    pub fn status(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }
}

impl Driver for OnvifDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let config = Arc::new(self.config);
        let mut tasks = JoinSet::new();
        for cam in &self.cameras {
            let task = camera::CameraTask::new(
                cam.clone(),
                config.clone(),
                self.http.clone(),
                self.board.clone(),
            );
            tasks.spawn(task.run(cx.clone()));
        }
        let cameras: HashMap<String, Camera> = self
            .cameras
            .iter()
            .map(|c| (c.device.as_str().to_owned(), c.clone()))
            .collect();
        let snap = Arc::new(snap::Snapshotter {
            http: self.http.clone(),
            store: self.store,
            limits: config.snapshots.clone(),
            board: self.board.clone(),
        });
        while let Some(req) = cx.next_command().await {
            if req.command.kind != CommandKind::CAMERA_SNAPSHOT {
                req.respond(
                    CommandStatus::Unsupported,
                    "onvif cameras take camera.snapshot only",
                );
                continue;
            }
            let Some(cam) = cameras.get(req.device.as_str()).cloned() else {
                let d = format!("{} is not a camera of this driver", req.device.as_str());
                req.respond(CommandStatus::Rejected, d);
                continue;
            };
            let (snap, cx) = (snap.clone(), cx.clone());
            tasks.spawn(async move { snap.take(cam, req, cx).await });
        }
        // Shutdown: camera tasks unsubscribe themselves; wait for them (bounded by their
        // own request timeouts).
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

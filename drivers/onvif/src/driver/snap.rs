//! `camera.snapshot`: fetch, check, store, journal, answer.
//!
//! The `video.snapshot` event is journaled before the command is answered `Succeeded`, so a
//! result always refers to a file the journal knows about.

use std::sync::Arc;

use campusgw_sdk::{Class, CommandRequest, CommandStatus, DriverContext, NewEvent};
use chrono::{SecondsFormat, Utc};
use reqwest::{Method, Url};
use serde_json::json;

use super::{Camera, StatusBoard};
use crate::client::{CallError, CameraClient, Credentials};
use crate::config::SnapshotConfig;
use crate::events::VIDEO_SNAPSHOT;
use crate::snapshot::{self, Store};

/// Takes snapshots for every camera of the driver.
pub(super) struct Snapshotter {
    pub(super) http: reqwest::Client,
    pub(super) store: Store,
    pub(super) limits: SnapshotConfig,
    pub(super) board: Arc<StatusBoard>,
}

impl Snapshotter {
    pub(super) async fn take(self: Arc<Self>, cam: Camera, req: CommandRequest, cx: DriverContext) {
        match self.fetch_and_store(&cam, &req, &cx).await {
            Ok(file) => req.respond(CommandStatus::Succeeded, file),
            Err(why) => {
                metrics::counter!("campusgw_onvif_snapshot_failures_total").increment(1);
                tracing::warn!(camera = cam.device.as_str(), error = %why, "onvif snapshot failed");
                req.respond(CommandStatus::Failed, why);
            }
        }
    }

    async fn fetch_and_store(
        &self,
        cam: &Camera,
        req: &CommandRequest,
        cx: &DriverContext,
    ) -> Result<String, String> {
        let uri = self
            .board
            .camera(cam.device.as_str())
            .and_then(|s| s.snapshot_uri)
            .ok_or("the camera's snapshot uri is not known yet (not connected)")?;
        let url = Url::parse(&uri).map_err(|e| format!("bad snapshot uri: {e}"))?;
        let creds = match (&cam.user, &cam.password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let mut client =
            CameraClient::new(self.http.clone(), cam.xaddr.clone(), creds, cam.allow_http);
        let limit = self.limits.max_image_bytes;
        let (status, body) = client
            .send(Method::GET, &url, None, self.limits.timeout.0, limit)
            .await
            .map_err(|e| match e {
                CallError::TooLarge(n) => format!("snapshot larger than the {n}-byte limit"),
                other => format!("snapshot fetch failed: {other}"),
            })?;
        if !status.is_success() {
            return Err(format!("snapshot fetch answered http {}", status.as_u16()));
        }
        snapshot::check_jpeg(&body).map_err(|e| e.to_string())?;
        let at = Utc::now();
        let store = self.store.clone();
        let camera = cam.device.as_str().to_owned();
        let stored = tokio::task::spawn_blocking(move || store.put(&camera, at, &body))
            .await
            .map_err(|e| format!("snapshot store task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let e = NewEvent::new(VIDEO_SNAPSHOT, Class::Operations)
            .device(cam.device.clone())
            .occurred_at(at)
            .payload(json!({
                "camera": cam.device.as_str(),
                "file": stored.file,
                "sha256": stored.sha256,
                "size": stored.size,
                "taken_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "command_id": req.command.id.to_string(),
            }));
        let e = match &cam.location {
            Some(l) => e.location(l.clone()),
            None => e,
        };
        cx.emit(e)
            .await
            .map_err(|e| format!("journal refused the snapshot event: {e}"))?;
        Ok(stored.file)
    }
}

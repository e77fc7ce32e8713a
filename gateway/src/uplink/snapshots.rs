//! What an MQTT or webhook uplink sends of a camera snapshot (issue 16): the `snapshots`
//! key of the `[[uplink]]` table.
//!
//! - `"reference"` (the default): the `video.snapshot` event as journaled: camera, file
//!   name, SHA-256, size, time. The county knows a picture exists and can ask for it
//!   (the console serves it at `/api/v1/snapshots/{seq}`); no image bytes on the link.
//! - `"image"`: the same event with `payload.image` = `{content_type, encoding: "base64",
//!   sha256, size, data}`: the JPEG itself, read from the camera's snapshot directory
//!   when the event is sent and checked against the journaled size and hash. Only images
//!   up to `snapshot_max_bytes` (default 500 000 bytes of JPEG) travel; a bigger one, or one
//!   already pruned or changed on disk, is sent as the reference with
//!   `payload.image_omitted` saying why. The event is never held back for its image.
//! - `"none"`: the event without `payload.file` (camera, time, hash and size only). To
//!   forward no `video.snapshot` at all, leave the kind out of the uplink's `kinds`.
//!
//! The image is added in the transport, at send time, not in the journal or the feed: the
//! journal row stays small, and the feed's pages never hold images in memory.
//!
//! MQTT packets are capped at 1 MiB (`mqtt_link`), so an MQTT uplink's
//! `snapshot_max_bytes` may be at most [`MQTT_MAX_IMAGE_BYTES`] (base64 grows 4/3).

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use campusgw_sdk::{ConfigIssue, Event, FieldPath};
use serde::Deserialize;

use super::feed::WireEvent;
use crate::console::snapshots::{self as console_snapshots, MediaDirs};

/// Default `snapshot_max_bytes`.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 500_000;
/// The largest `snapshot_max_bytes` of an MQTT uplink: its base64 and the event fit the
/// 1 MiB packet limit.
pub const MQTT_MAX_IMAGE_BYTES: u64 = 700_000;
/// The largest `snapshot_max_bytes` of a webhook uplink.
pub const WEBHOOK_MAX_IMAGE_BYTES: u64 = 8_000_000;

/// `snapshots = "reference" | "image" | "none"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// The event as journaled.
    #[default]
    Reference,
    /// The event with the JPEG (base64) within the size cap.
    Image,
    /// The event without the file name.
    None,
}

/// An uplink's snapshot settings.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// What is sent.
    pub mode: SnapshotMode,
    /// Largest JPEG sent with `image` (bytes before base64).
    pub max_bytes: u64,
    /// Where each camera's snapshots are (filled by `crate::app` from the drivers).
    pub dirs: Arc<MediaDirs>,
}

impl Default for SnapshotOptions {
    fn default() -> SnapshotOptions {
        SnapshotOptions {
            mode: SnapshotMode::Reference,
            max_bytes: DEFAULT_MAX_IMAGE_BYTES,
            dirs: Arc::default(),
        }
    }
}

impl SnapshotOptions {
    /// Validates the keys as written; `limit` is the kind's largest `snapshot_max_bytes`.
    pub fn parse(
        mode: Option<SnapshotMode>,
        max_bytes: Option<u64>,
        limit: u64,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> SnapshotOptions {
        let max = max_bytes.unwrap_or(DEFAULT_MAX_IMAGE_BYTES.min(limit));
        if max == 0 || max > limit {
            issues.push(ConfigIssue::new(
                at.key("snapshot_max_bytes"),
                format!(
                    "snapshot_max_bytes {max} must be between 1 and {limit} for this uplink kind"
                ),
            ));
        }
        SnapshotOptions {
            mode: mode.unwrap_or_default(),
            max_bytes: max.clamp(1, limit),
            dirs: Arc::default(),
        }
    }

    /// The bytes to send for `e`: its journaled JSON unless it is a `video.snapshot` and
    /// the mode changes it.
    pub fn wire_json<'a>(&self, e: &'a WireEvent) -> Cow<'a, [u8]> {
        if e.kind.as_str() != console_snapshots::SNAPSHOT_KIND
            || self.mode == SnapshotMode::Reference
        {
            return Cow::Borrowed(&e.json);
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&e.json) else {
            return Cow::Borrowed(&e.json);
        };
        let added = match self.mode {
            SnapshotMode::Image => Some(self.image(&e.json)),
            _ => None,
        };
        let Some(payload) = v.get_mut("payload").and_then(|p| p.as_object_mut()) else {
            return Cow::Borrowed(&e.json);
        };
        match added {
            None => {
                payload.remove("file");
            }
            Some(Ok(image)) => {
                payload.insert("image".into(), image);
            }
            Some(Err(why)) => {
                metrics::counter!("campusgw_uplink_snapshot_image_omitted_total").increment(1);
                payload.insert("image_omitted".into(), why.into());
            }
        }
        match serde_json::to_vec(&v) {
            Ok(b) => Cow::Owned(b),
            Err(_) => Cow::Borrowed(&e.json),
        }
    }

    fn image(&self, json: &[u8]) -> Result<serde_json::Value, String> {
        let event: Event =
            serde_json::from_slice(json).map_err(|e| format!("event does not decode: {e}"))?;
        let snap = console_snapshots::snapshot_of(&event)
            .ok_or_else(|| "not a well-formed video.snapshot event".to_owned())?;
        if snap.size > self.max_bytes {
            return Err(format!(
                "image of {} bytes is larger than this uplink's snapshot_max_bytes ({})",
                snap.size, self.max_bytes
            ));
        }
        let dir = self.dirs.get(&event.source.device).ok_or_else(|| {
            format!(
                "camera {} has no snapshot directory configured",
                snap.camera
            )
        })?;
        let body = console_snapshots::read_checked(dir, &snap).map_err(|e| e.to_string())?;
        Ok(serde_json::json!({
            "content_type": "image/jpeg",
            "encoding": "base64",
            "sha256": snap.sha256,
            "size": snap.size,
            "data": base64::engine::general_purpose::STANDARD.encode(&body),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use campusgw_sdk::{Class, DeviceId, Kind, Location, NewEvent};
    use sha2::{Digest, Sha256};

    fn wire(dir: &std::path::Path, jpeg: &[u8]) -> WireEvent {
        std::fs::write(dir.join("cam-1.jpg"), jpeg).unwrap();
        let sha: String = Sha256::digest(jpeg)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut e = Event::stamp(
            NewEvent::new(Kind::from_static("video.snapshot"), Class::Operations).payload(
                serde_json::json!({"camera": "cam", "file": "cam-1.jpg", "sha256": sha,
                                   "size": jpeg.len(), "taken_at": "2026-12-03T10:00:00.000Z"}),
            ),
            &DeviceId::new("cam").unwrap(),
            "onvif",
            &Location::default(),
        );
        e.seq = 9;
        WireEvent::from_event(&e)
    }

    fn options(mode: SnapshotMode, max: u64, dir: &std::path::Path) -> SnapshotOptions {
        let mut dirs = MediaDirs::new();
        dirs.insert(DeviceId::new("cam").unwrap(), dir.to_owned());
        SnapshotOptions {
            mode,
            max_bytes: max,
            dirs: Arc::new(dirs),
        }
    }

    fn payload(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(b).unwrap()["payload"].clone()
    }

    #[test]
    fn each_mode_sends_what_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = b"\xff\xd8\xff\xe0 a picture \xff\xd9";
        let w = wire(dir.path(), jpeg);
        let r = options(SnapshotMode::Reference, 100, dir.path());
        assert!(matches!(r.wire_json(&w), Cow::Borrowed(_)), "as journaled");

        let p = payload(&options(SnapshotMode::Image, 100, dir.path()).wire_json(&w));
        assert_eq!(p["file"], "cam-1.jpg");
        let data = base64::engine::general_purpose::STANDARD
            .decode(p["image"]["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, jpeg);
        assert_eq!(p["image"]["sha256"], p["sha256"]);

        let p = payload(&options(SnapshotMode::Image, 10, dir.path()).wire_json(&w));
        assert!(p.get("image").is_none());
        assert!(
            p["image_omitted"]
                .as_str()
                .unwrap()
                .contains("snapshot_max_bytes")
        );

        let p = payload(&options(SnapshotMode::None, 100, dir.path()).wire_json(&w));
        assert!(p.get("file").is_none());
        assert_eq!(p["camera"], "cam");

        std::fs::remove_file(dir.path().join("cam-1.jpg")).unwrap();
        let p = payload(&options(SnapshotMode::Image, 100, dir.path()).wire_json(&w));
        assert!(
            p["image_omitted"]
                .as_str()
                .unwrap()
                .contains("no longer stored"),
            "{p}"
        );
    }

    #[test]
    fn a_cap_beyond_the_kind_limit_is_a_config_error() {
        let mut issues = Vec::new();
        let at = FieldPath::root().key("uplink");
        let o = SnapshotOptions::parse(
            Some(SnapshotMode::Image),
            Some(MQTT_MAX_IMAGE_BYTES + 1),
            MQTT_MAX_IMAGE_BYTES,
            &at,
            &mut issues,
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(o.max_bytes, MQTT_MAX_IMAGE_BYTES);
        let o = SnapshotOptions::parse(None, None, MQTT_MAX_IMAGE_BYTES, &at, &mut Vec::new());
        assert_eq!(o.mode, SnapshotMode::Reference);
        assert_eq!(o.max_bytes, DEFAULT_MAX_IMAGE_BYTES);
    }
}

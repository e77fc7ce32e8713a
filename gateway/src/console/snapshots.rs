//! Camera snapshots and stream links in the console (issue 16).
//!
//! - `GET /api/v1/snapshots/{seq}`: the JPEG that the journaled `video.snapshot` event `seq`
//!   names, read from the snapshot directory of the camera that took it.
//! - `GET /api/v1/alarms/{id}/snapshots`: the snapshots attached to an alarm (the files its
//!   `camera.snapshot` commands stored, drivers/onvif/README.md) and the RTSP links of those
//!   cameras (their latest journaled `video.streams`); the alarm page shows the same.
//!
//! # Only what the journal names
//! A request names an event, never a path: the file served is the `file` of a durable
//! `video.snapshot` event, inside the directory that the event's device's driver declares
//! (`DriverConfig::media_dir`). The name must be a plain file name (letters, digits, `-`,
//! `_`, `.`; no separators, no leading dot, ending `.jpg`), the file must have the size the
//! event recorded and its SHA-256 must match the event's `sha256`: a file replaced or
//! truncated on disk is refused (409), a pruned one is gone (410). Answers carry
//! `Cache-Control: private, no-store` (no proxy or shared cache keeps a camera image) and
//! `X-Content-Type-Options: nosniff`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use campusgw_sdk::{Class, DeviceId, Event};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ConsoleState;
use super::error::{ApiError, ApiPath, ErrorBody};
use crate::alarms::AlarmDetail;

/// The kind of the events whose files are served.
pub const SNAPSHOT_KIND: &str = "video.snapshot";
/// The kind carrying a camera's RTSP links.
pub const STREAMS_KIND: &str = "video.streams";
/// Largest file served (the driver's own limit is `max_image_bytes`, 2 MB by default).
pub const MAX_SERVED_BYTES: u64 = 32 * 1024 * 1024;
/// Most snapshots listed for one alarm.
pub const MAX_PER_ALARM: usize = 64;

/// Device id → the directory its driver stores snapshot files in.
pub type MediaDirs = BTreeMap<DeviceId, PathBuf>;

/// One stored snapshot, as a journaled `video.snapshot` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SnapshotRef {
    /// Seq of the `video.snapshot` event.
    pub seq: u64,
    /// The camera's device id.
    pub camera: String,
    /// File name in the camera's snapshot directory.
    pub file: String,
    /// SHA-256 of the JPEG, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was taken (RFC 3339).
    pub taken_at: Option<String>,
    /// Where the console serves it.
    pub url: String,
}

/// One RTSP link of a camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StreamLink {
    /// The camera's device id.
    pub camera: String,
    /// ONVIF profile token.
    pub profile: String,
    /// Profile name.
    pub name: String,
    /// RTSP URI (any user:password in it removed).
    pub uri: String,
}

/// What an alarm brought from the cameras.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AlarmMedia {
    /// Snapshots attached to the alarm, oldest first.
    pub snapshots: Vec<SnapshotRef>,
    /// The latest RTSP links of the cameras that took them.
    pub streams: Vec<StreamLink>,
}

/// Whether `name` is a plain snapshot file name (no directory part, no hidden file).
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.ends_with(".jpg")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.contains("..")
}

/// The snapshot an event describes, if it is a well-formed `video.snapshot`.
pub fn snapshot_of(e: &Event) -> Option<SnapshotRef> {
    if e.kind.as_str() != SNAPSHOT_KIND {
        return None;
    }
    let p = &e.payload;
    let file = p.get("file")?.as_str()?.to_owned();
    let sha256 = p.get("sha256")?.as_str()?.to_ascii_lowercase();
    if !plain_file_name(&file)
        || sha256.len() != 64
        || !sha256.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(SnapshotRef {
        seq: e.seq,
        camera: e.source.device.to_string(),
        file,
        sha256,
        size: p.get("size")?.as_u64()?,
        taken_at: p
            .get("taken_at")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        url: format!("/api/v1/snapshots/{}", e.seq),
    })
}

/// Why a snapshot cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// No such durable event, or not a well-formed `video.snapshot`.
    #[error("no snapshot event with seq {0}")]
    NoEvent(u64),
    /// The event's device has no snapshot directory in this configuration.
    #[error("camera {0} has no snapshot directory configured")]
    NoDir(String),
    /// The file was deleted (age or size limit).
    #[error("snapshot {0} is no longer stored (deleted by the snapshot size or age limit)")]
    Gone(String),
    /// The file on disk is not the one the event recorded.
    #[error("snapshot {0} on disk does not match the journaled size and hash")]
    Mismatch(String),
    /// Reading failed.
    #[error("cannot read snapshot {file}: {why}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        why: String,
    },
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> ApiError {
        let (status, code) = match &e {
            ServeError::NoEvent(_) | ServeError::NoDir(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServeError::Gone(_) => (StatusCode::GONE, "gone"),
            ServeError::Mismatch(_) => (StatusCode::CONFLICT, "snapshot_mismatch"),
            ServeError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Reads the file `snap` names from `dir`, checking size and hash.
///
/// # Errors
/// [`ServeError`].
pub fn read_checked(dir: &Path, snap: &SnapshotRef) -> Result<Vec<u8>, ServeError> {
    // snapshot_of admitted only plain names; checked again so that no caller can skip it.
    if !plain_file_name(&snap.file) {
        return Err(ServeError::NoEvent(snap.seq));
    }
    if snap.size > MAX_SERVED_BYTES {
        return Err(ServeError::Mismatch(snap.file.clone()));
    }
    let path = dir.join(&snap.file);
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ServeError::Gone(snap.file.clone()),
        _ => ServeError::Io {
            file: snap.file.clone(),
            why: e.to_string(),
        },
    };
    // symlink_metadata: a symlink planted in the directory is not followed.
    let meta = std::fs::symlink_metadata(&path).map_err(io)?;
    if !meta.is_file() || meta.len() != snap.size {
        return Err(ServeError::Mismatch(snap.file.clone()));
    }
    let body = std::fs::read(&path).map_err(io)?;
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if body.len() as u64 != snap.size || digest != snap.sha256 {
        return Err(ServeError::Mismatch(snap.file.clone()));
    }
    Ok(body)
}

/// The JPEG of snapshot event `seq` (blocking).
///
/// # Errors
/// [`ServeError`].
pub fn load(
    journal: &crate::journal::Journal,
    dirs: &MediaDirs,
    seq: u64,
) -> Result<Vec<u8>, ServeError> {
    let event = journal
        .reader()
        .and_then(|r| r.get(seq))
        .map_err(|e| ServeError::Io {
            file: format!("seq {seq}"),
            why: e.to_string(),
        })?
        .ok_or(ServeError::NoEvent(seq))?;
    let snap = snapshot_of(&event).ok_or(ServeError::NoEvent(seq))?;
    let dir = dirs
        .get(&event.source.device)
        .ok_or_else(|| ServeError::NoDir(snap.camera.clone()))?;
    read_checked(dir, &snap)
}

/// The JPEG a `video.snapshot` event names.
#[utoipa::path(get, path = "/api/v1/snapshots/{seq}", tag = "video",
    params(("seq" = u64, Path, description = "seq of the video.snapshot event")),
    responses((status = 200, description = "the JPEG", content_type = "image/jpeg"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 410, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn image(
    State(s): State<ConsoleState>,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let j = s.journal.clone();
    let dirs = s.media.clone();
    let body = tokio::task::spawn_blocking(move || load(&j, &dirs, seq))
        .await
        .map_err(ApiError::internal)??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}

/// The (camera, file) pairs the alarm's `camera.snapshot` commands stored, and the lowest
/// seq their causes had (snapshot events come after it).
fn attached(detail: &AlarmDetail) -> (BTreeSet<(String, String)>, u64) {
    let mut out = BTreeSet::new();
    let mut from = u64::MAX;
    for t in &detail.timeline {
        let d = &t.detail;
        let kind = d.pointer("/action/kind").and_then(|v| v.as_str());
        if t.what != "command" || kind != Some("camera.snapshot") {
            continue;
        }
        from = from.min(d.get("cause_seq").and_then(|v| v.as_u64()).unwrap_or(0));
        for r in d
            .get("result")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let ok = r.get("status").and_then(|v| v.as_str()) == Some("succeeded");
            if let (true, Some(dev), Some(file)) = (
                ok,
                r.get("device").and_then(|v| v.as_str()),
                r.get("detail").and_then(|v| v.as_str()),
            ) {
                out.insert((dev.to_owned(), file.to_owned()));
            }
        }
    }
    (out, if from == u64::MAX { 0 } else { from })
}

/// Removes `user:password@` from a URI (a camera may embed its credentials).
pub fn without_userinfo(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

fn rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    mut each: impl FnMut(Event) -> bool,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare(sql)?;
    let mut rs = stmt.query(params)?;
    while let Some(r) = rs.next()? {
        let seq: i64 = r.get(0)?;
        let body: String = r.get(1)?;
        if let Ok(mut e) = serde_json::from_str::<Event>(&body) {
            e.seq = seq as u64;
            if !each(e) {
                break;
            }
        }
    }
    Ok(())
}

/// The snapshots attached to an alarm and its cameras' stream links (blocking).
///
/// # Errors
/// Storage trouble.
pub fn of_alarm(
    journal: &crate::journal::Journal,
    detail: &AlarmDetail,
) -> Result<AlarmMedia, ApiError> {
    let (wanted, from) = attached(detail);
    let mut media = AlarmMedia::default();
    if wanted.is_empty() {
        return Ok(media);
    }
    let durable = journal
        .status()
        .last_seq
        .load(std::sync::atomic::Ordering::SeqCst);
    let durable = i64::try_from(durable).unwrap_or(i64::MAX);
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let ops = i64::from(Class::Operations.rank());
    let conn = journal.read_connection().map_err(ApiError::internal)?;
    let mut left = wanted.clone();
    rows(
        &conn,
        "SELECT seq, body FROM events WHERE class = ?1 AND seq > ?2 AND seq <= ?3 \
         AND kind = ?4 ORDER BY seq",
        &[&ops, &from, &durable, &SNAPSHOT_KIND],
        |e| {
            if let Some(s) = snapshot_of(&e)
                && left.remove(&(s.camera.clone(), s.file.clone()))
            {
                media.snapshots.push(s);
            }
            !left.is_empty() && media.snapshots.len() < MAX_PER_ALARM
        },
    )
    .map_err(ApiError::internal)?;
    let mut cameras: BTreeSet<String> = wanted.into_iter().map(|(c, _)| c).collect();
    let mut streams: BTreeMap<String, Vec<StreamLink>> = BTreeMap::new();
    rows(
        &conn,
        "SELECT seq, body FROM events WHERE class = ?1 AND seq <= ?2 AND kind = ?3 \
         ORDER BY seq DESC",
        &[&ops, &durable, &STREAMS_KIND],
        |e| {
            let cam = e.source.device.to_string();
            if cameras.remove(&cam) {
                let links = e
                    .payload
                    .get("streams")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        Some(StreamLink {
                            camera: cam.clone(),
                            profile: s.get("profile")?.as_str()?.to_owned(),
                            name: s
                                .get("name")
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_owned(),
                            uri: without_userinfo(s.get("uri")?.as_str()?),
                        })
                    })
                    .filter(|l| l.uri.starts_with("rtsp://") || l.uri.starts_with("rtsps://"))
                    .collect();
                streams.insert(cam, links);
            }
            !cameras.is_empty()
        },
    )
    .map_err(ApiError::internal)?;
    media.streams = streams.into_values().flatten().collect();
    Ok(media)
}

/// The alarm's media, for the page (errors become an empty list and a log line).
pub async fn media_for_page(s: &ConsoleState, detail: &AlarmDetail) -> AlarmMedia {
    let j = s.journal.clone();
    let d = detail.clone();
    match tokio::task::spawn_blocking(move || of_alarm(&j, &d)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::warn!(error = %e.message, "alarm snapshots not listed");
            AlarmMedia::default()
        }
        Err(e) => {
            tracing::warn!(error = %e, "alarm snapshots not listed");
            AlarmMedia::default()
        }
    }
}

/// The snapshots attached to an alarm and the RTSP links of its cameras.
#[utoipa::path(get, path = "/api/v1/alarms/{id}/snapshots", tag = "video",
    params(("id" = String, Path, description = "alarm id")),
    responses((status = 200, body = AlarmMedia), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn of_alarm_route(
    State(s): State<ConsoleState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<AlarmMedia>, ApiError> {
    let detail = super::alarms::detail(&s, &id)?;
    let j = s.journal.clone();
    tokio::task::spawn_blocking(move || of_alarm(&j, &detail))
        .await
        .map_err(ApiError::internal)?
        .map(axum::Json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn only_plain_jpg_names_pass() {
        assert!(plain_file_name(
            "cam_1-20261203T101010.123Z-0123456789ab.jpg"
        ));
        for bad in [
            "",
            "../etc/passwd.jpg",
            "a/b.jpg",
            "a\\b.jpg",
            ".hidden.jpg",
            "x..jpg",
            "x.jpeg",
            "x.jpg\0",
            "/abs.jpg",
            "%2e%2e.jpg",
        ] {
            assert!(!plain_file_name(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn credentials_are_cut_from_stream_links() {
        assert_eq!(
            without_userinfo("rtsp://admin:secret@10.1.5.20:554/Streaming/101"),
            "rtsp://10.1.5.20:554/Streaming/101"
        );
        assert_eq!(
            without_userinfo("rtsp://10.1.5.20/a@b"),
            "rtsp://10.1.5.20/a@b"
        );
    }

    fn snap(dir: &Path, body: &[u8]) -> SnapshotRef {
        std::fs::write(dir.join("cam-1.jpg"), body).unwrap();
        SnapshotRef {
            seq: 7,
            camera: "cam".into(),
            file: "cam-1.jpg".into(),
            sha256: Sha256::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            size: body.len() as u64,
            taken_at: None,
            url: String::new(),
        }
    }

    #[test]
    fn a_file_changed_on_disk_or_pruned_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let s = snap(dir.path(), b"\xff\xd8\xff\xe0 jpeg \xff\xd9");
        assert_eq!(read_checked(dir.path(), &s).unwrap().len() as u64, s.size);
        std::fs::write(
            dir.path().join("cam-1.jpg"),
            b"\xff\xd8\xff\xe0 JPEG \xff\xd9",
        )
        .unwrap();
        assert_eq!(
            read_checked(dir.path(), &s),
            Err(ServeError::Mismatch("cam-1.jpg".into()))
        );
        std::fs::remove_file(dir.path().join("cam-1.jpg")).unwrap();
        assert_eq!(
            read_checked(dir.path(), &s),
            Err(ServeError::Gone("cam-1.jpg".into()))
        );
    }
}

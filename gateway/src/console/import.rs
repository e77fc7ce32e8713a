//! Bulk import through the console (issue 12 item 4): `POST /api/v1/import/preview` reads
//! an uploaded CSV / XLSX against the gateway's config file and answers the problems (row,
//! column) and the changes, with a single-use id when it is clean; `POST
//! /api/v1/import/apply` with that id writes the merged configuration and journals
//! `audit.import`. Admin only; the apply is a state change like any other (CSRF for
//! sessions). The page `/import` drives both.
//!
//! # What apply does, in order
//! 1. takes the preview (the id is gone afterwards, whatever happens next; only the admin
//!    who made it can use it, within [`PREVIEW_TTL`]);
//! 2. reads the config file again and refuses (409) if it changed since the preview;
//! 3. journals `audit.import` `{by, detail: {file, file_sha256, table, rows, added,
//!    changed, removed, config, backup}}` and waits until it is durable, so no
//!    configuration change is ever unaudited (a journal refusal: 503, nothing written);
//! 4. replaces the file atomically with a backup beside it ([`crate::import::write`]); a
//!    failure there journals `audit.import_failed` and answers 500, the file unchanged.
//!
//! The running gateway is **not** reloaded: drivers are built at start, so the answer says
//! a restart is needed (`restart_required: true`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::ConsoleState;
use super::auth::Principal;
use super::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::import::{Diff, Format, ImportError, Preview, RowError, Sheet, TableKind};

/// Largest upload accepted (a 5,000-row XLSX is well under 1 MiB); bigger is 413.
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;
/// How long a preview id can be applied.
pub const PREVIEW_TTL: Duration = Duration::from_secs(30 * 60);
/// Previews kept at once (the oldest is dropped): each holds a whole merged config.
const MAX_PENDING: usize = 8;

struct Pending {
    by: String,
    made: Instant,
    file: String,
    file_sha256: String,
    base_sha256: String,
    preview: Preview,
}

/// The config file imports write to, and the previews waiting to be applied.
#[derive(Default)]
pub struct ImportDesk {
    config: Option<PathBuf>,
    pending: Mutex<HashMap<String, Pending>>,
    applying: tokio::sync::Mutex<()>,
}

impl ImportDesk {
    /// Imports into `config` (`None`: a gateway not started from a file; import refused).
    pub fn new(config: Option<PathBuf>) -> ImportDesk {
        ImportDesk {
            config,
            ..ImportDesk::default()
        }
    }

    /// The config file, if the gateway was started from one.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    fn config(&self) -> Result<PathBuf, ApiError> {
        self.config.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_config_file",
                "this gateway was not started from a config file: there is nothing to import into",
            )
        })
    }

    fn keep(&self, p: Pending) -> String {
        let id = super::auth::random_token();
        let mut map = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, v| v.made.elapsed() < PREVIEW_TTL);
        while map.len() >= MAX_PENDING {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| v.made)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(id.clone(), p);
        id
    }

    /// Removes and returns the preview `id` of `by`, if it is still valid.
    fn take(&self, id: &str, by: &str) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(id).is_none_or(|p| p.by != by) {
            return None;
        }
        map.remove(id).filter(|p| p.made.elapsed() < PREVIEW_TTL)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The uploaded file, as the OpenAPI document describes the body.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Upload(pub Vec<u8>);

/// `?name=` of a preview upload.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// The file's name (`doors.xlsx`): tells the format when the content type does not.
    pub name: Option<String>,
}

/// A preview: the problems, the changes, and the id that applies it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewAnswer {
    /// Single-use id for `POST /api/v1/import/apply`; null when there are problems.
    pub id: Option<String>,
    /// Seconds the id stays valid.
    pub expires_in_s: u64,
    /// SHA-256 of the uploaded file (hex), as journaled by the apply.
    pub file_sha256: String,
    /// The table the columns name (null: the file is not a readable table).
    pub table: Option<TableKind>,
    /// Data rows read.
    pub rows: usize,
    /// Every problem, by row and column (row 0: the file as a whole, or the existing
    /// config; the message says which).
    pub errors: Vec<RowError>,
    /// What applying would change.
    pub diff: Diff,
}

/// The body of an apply.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The id of a clean preview.
    pub id: String,
}

/// What an apply wrote.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApplyAnswer {
    /// The config file, now with the import.
    pub config: String,
    /// The copy of the file as it was before.
    pub backup: String,
    /// The table imported.
    pub table: TableKind,
    /// Rows imported.
    pub rows: usize,
    /// Entries added.
    pub added: usize,
    /// Entries changed.
    pub changed: usize,
    /// Entries removed.
    pub removed: usize,
    /// Seq of the journaled `audit.import` event.
    pub audit_seq: u64,
    /// Always true: the running gateway keeps the config it started with.
    pub restart_required: bool,
    /// What to do next, for a person.
    pub message: String,
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "the file is larger than {} MiB; split the table",
            MAX_IMPORT_BYTES >> 20
        ),
    )
}

/// The upload's format: from `?name=`, else the content type, else its first bytes.
fn format_of(headers: &HeaderMap, name: Option<&str>, bytes: &[u8]) -> Result<Format, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.to_ascii_lowercase().starts_with("multipart/") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file itself as the body (Content-Type text/csv or the xlsx type, ?name=FILE), not a multipart form",
        ));
    }
    let sniffed = if bytes.starts_with(b"PK\x03\x04") {
        Format::Xlsx
    } else {
        Format::Csv
    };
    Ok(name
        .and_then(Format::guess)
        .or_else(|| Format::guess(ctype))
        .unwrap_or(sniffed))
}

/// Previews an import (admin): the body is the CSV or XLSX file itself.
#[utoipa::path(post, path = "/api/v1/import/preview", tag = "import",
    params(("name" = Option<String>, Query, description = "file name (doors.xlsx): tells the format when the content type does not")),
    request_body(content = Upload, content_type = "application/octet-stream",
        description = "the CSV or XLSX file itself, at most 8 MiB (text/csv and the xlsx content type are accepted too)"),
    responses((status = 200, body = PreviewAnswer), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody)))]
pub async fn preview(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<PreviewAnswer>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_IMPORT_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_IMPORT_BYTES)
        .await
        .map_err(|_| too_large())?;
    if bytes.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
        return Err(ApiError::bad_request(
            "no file: send the CSV or XLSX file itself as the request body",
        ));
    }
    let format = format_of(&headers, q.name.as_deref(), &bytes)?;
    let config = s.imports.config()?;
    let file = q.name.clone().unwrap_or_else(|| "upload".into());
    let file_sha256 = sha256_hex(&bytes);
    let shown = q
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "the file".into());
    let outcome = tokio::task::spawn_blocking(move || {
        let base = std::fs::read(&config)
            .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", config.display())))?;
        let sheet = match Sheet::read(&bytes, format) {
            Ok(sheet) => sheet,
            Err(e) => return Ok(Err(format!("{shown}: {e}"))),
        };
        let text = String::from_utf8_lossy(&base);
        let preview = crate::import::preview(&text, &config, &sheet).map_err(|e| match e {
            ImportError::Sheet(e) => ApiError::bad_request(e.to_string()),
            ImportError::Base(m) => ApiError::new(
                StatusCode::CONFLICT,
                "config_invalid",
                format!(
                    "{}: {m}; fix it (campusgw check-config) before importing",
                    config.display()
                ),
            ),
            ImportError::Render(m) => ApiError::internal(m),
        })?;
        Ok::<_, ApiError>(Ok((sha256_hex(&base), preview)))
    })
    .await
    .map_err(ApiError::internal)??;
    let (base_sha256, preview) = match outcome {
        Ok(found) => found,
        // Not a table at all: a preview with that one problem (the request itself was fine).
        Err(unreadable) => {
            return Ok(axum::Json(PreviewAnswer {
                id: None,
                expires_in_s: 0,
                file_sha256,
                table: None,
                rows: 0,
                errors: vec![RowError {
                    row: 0,
                    column: None,
                    header: None,
                    message: unreadable,
                }],
                diff: Diff::default(),
            }));
        }
    };
    let answer = PreviewAnswer {
        id: None,
        expires_in_s: PREVIEW_TTL.as_secs(),
        file_sha256: file_sha256.clone(),
        table: Some(preview.table),
        rows: preview.rows,
        errors: preview.errors.clone(),
        diff: preview.diff.clone(),
    };
    let id = preview.errors.is_empty().then(|| {
        s.imports.keep(Pending {
            by: p.actor(),
            made: Instant::now(),
            file,
            file_sha256,
            base_sha256,
            preview,
        })
    });
    Ok(axum::Json(PreviewAnswer { id, ..answer }))
}

/// Applies a clean preview (admin): writes the config, journals `audit.import`.
#[utoipa::path(post, path = "/api/v1/import/apply", tag = "import",
    request_body = ApplyRequest,
    responses((status = 200, body = ApplyAnswer), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn apply(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<ApplyRequest>,
) -> Result<axum::Json<ApplyAnswer>, ApiError> {
    let config = s.imports.config()?;
    let _one_at_a_time = s.imports.applying.lock().await;
    let who = p.actor();
    let pending = s.imports.take(&req.id, &who).ok_or_else(|| {
        ApiError::not_found(
            "no such preview of yours: it was applied already, expired (30 min), or never made; preview the file again",
        )
    })?;
    let path = config.clone();
    let merged = pending.preview.merged.clone();
    let before = tokio::task::spawn_blocking(move || {
        let before = std::fs::read(&path)
            .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", path.display())))?;
        Ok::<_, ApiError>(before)
    })
    .await
    .map_err(ApiError::internal)??;
    if sha256_hex(&before) != pending.base_sha256 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "config_changed",
            format!(
                "{} changed since the preview; preview the file again",
                config.display()
            ),
        ));
    }
    let check_path = config.clone();
    let check = merged.clone();
    tokio::task::spawn_blocking(move || crate::config::parse(&check, &check_path).map(|_| ()))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "config_invalid",
                format!("the merged configuration does not pass the check: {e}"),
            )
        })?;
    let d = &pending.preview.diff;
    let mut detail = serde_json::json!({
        "file": pending.file,
        "file_sha256": pending.file_sha256,
        "table": pending.preview.table,
        "rows": pending.preview.rows,
        "added": d.added.len(),
        "changed": d.changed.len(),
        "removed": d.removed.len(),
        "config": config.display().to_string(),
        "config_sha256_before": pending.base_sha256,
        "config_sha256_after": sha256_hex(merged.as_bytes()),
    });
    // Durable before the file changes: a configuration change is never unaudited.
    let audit_seq = s
        .journal_operation(
            "audit.import",
            serde_json::json!({ "by": who, "detail": detail.clone() }),
        )
        .await?;
    let path = config.clone();
    let written = tokio::task::spawn_blocking(move || {
        crate::import::write::replace_config(&path, &before, &merged)
    })
    .await
    .map_err(ApiError::internal)?;
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            detail["error"] = serde_json::Value::String(e.to_string());
            s.audit("import_failed", &who, detail).await;
            return Err(ApiError::internal(format!(
                "{} not written ({e}); it is unchanged",
                config.display()
            )));
        }
    };
    let (config, backup) = (
        written.config.display().to_string(),
        written.backup.display().to_string(),
    );
    tracing::info!(by = %who, config = %config, backup = %backup, rows = pending.preview.rows, "bulk import applied");
    Ok(axum::Json(ApplyAnswer {
        message: format!(
            "written to {config} (the previous file is {backup}). The running gateway keeps the configuration it started with: restart it (systemctl restart campusgw) to use the import."
        ),
        config,
        backup,
        table: pending.preview.table,
        rows: pending.preview.rows,
        added: d.added.len(),
        changed: d.changed.len(),
        removed: d.removed.len(),
        audit_seq,
        restart_required: true,
    }))
}

/// `GET /import`: upload, preview, apply.
pub async fn page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
) -> Response {
    let config = s
        .imports
        .config_file()
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    super::pages::page(
        &s,
        &headers,
        &p,
        "import.html",
        minijinja::context! { config => config, max_mib => MAX_IMPORT_BYTES >> 20 },
    )
}

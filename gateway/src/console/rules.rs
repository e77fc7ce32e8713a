//! `GET /api/v1/rules` and enable / disable. The console never changes the engine: it
//! journals `rule.enable` / `rule.disable` `{rule, by}` and the rules runner applies them
//! (docs: the rules interface). The list shows the configured state overlaid with the
//! newest such event of each rule.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::ConsoleState;
use super::auth::Principal;
use super::error::{ApiError, ApiPath, ErrorBody};

/// A configured rule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleInfo {
    /// Its id.
    pub id: String,
    /// What it does.
    pub description: String,
    /// Enabled (configured state, then the newest operator switch).
    pub enabled: bool,
    /// The file it is defined in.
    pub file: String,
}

/// Where the rule list comes from: the rules directory, read and checked when listed (the
/// runner hot-reloads it, so a list taken at start would go stale).
#[derive(Clone, Default)]
pub struct RuleSource(Option<std::sync::Arc<(std::path::PathBuf, campusgw_rules::RuleEnv)>>);

impl RuleSource {
    /// Rules from `dir`, checked with `env` (as the runner checks them).
    pub fn dir(dir: std::path::PathBuf, env: campusgw_rules::RuleEnv) -> RuleSource {
        RuleSource(Some(std::sync::Arc::new((dir, env))))
    }

    /// The rules now (none without `[rules]`; an invalid set lists nothing and is logged by
    /// the runner, which keeps running the old one).
    pub fn load(&self) -> Vec<RuleInfo> {
        let Some(src) = &self.0 else {
            return Vec::new();
        };
        match crate::rules::load_rule_set(&src.0, &src.1) {
            Ok(set) => set
                .rules()
                .map(|r| RuleInfo {
                    id: r.id.clone(),
                    description: r.description.clone(),
                    enabled: r.enabled,
                    file: r.file.display().to_string(),
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "console: rule set not readable now");
                Vec::new()
            }
        }
    }
}

/// The newest `rule.enable` / `rule.disable` per rule (blocking).
fn switches(journal: &crate::journal::Journal) -> Result<HashMap<String, bool>, ApiError> {
    let conn = journal.read_connection().map_err(ApiError::internal)?;
    let mut stmt = conn
        .prepare(
            "SELECT kind, json_extract(body, '$.payload.rule') FROM events
             WHERE kind IN ('rule.enable', 'rule.disable') ORDER BY seq",
        )
        .map_err(ApiError::internal)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .map_err(ApiError::internal)?;
    let mut out = HashMap::new();
    for row in rows {
        let (kind, rule) = row.map_err(ApiError::internal)?;
        if let Some(rule) = rule {
            out.insert(rule, kind == "rule.enable");
        }
    }
    Ok(out)
}

/// The rules with their current switch.
///
/// # Errors
/// Storage trouble.
pub async fn current(s: &ConsoleState) -> Result<Vec<RuleInfo>, ApiError> {
    let j = s.journal.clone();
    let src = s.rules.clone();
    let (sw, rules) = tokio::task::spawn_blocking(move || switches(&j).map(|sw| (sw, src.load())))
        .await
        .map_err(ApiError::internal)??;
    Ok(rules
        .iter()
        .map(|r| RuleInfo {
            enabled: sw.get(&r.id).copied().unwrap_or(r.enabled),
            ..r.clone()
        })
        .collect())
}

/// The rules.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    responses((status = 200, body = Vec<RuleInfo>), (status = 401, body = ErrorBody)))]
pub async fn list(State(s): State<ConsoleState>) -> Result<axum::Json<Vec<RuleInfo>>, ApiError> {
    current(&s).await.map(axum::Json)
}

async fn switch(
    s: &ConsoleState,
    p: &Principal,
    id: &str,
    on: bool,
) -> Result<StatusCode, ApiError> {
    let src = s.rules.clone();
    let rules = tokio::task::spawn_blocking(move || src.load())
        .await
        .map_err(ApiError::internal)?;
    if !rules.iter().any(|r| r.id == id) {
        return Err(ApiError::not_found(format!("no rule {id:?}")));
    }
    let kind = if on { "rule.enable" } else { "rule.disable" };
    s.journal_operation(kind, serde_json::json!({ "rule": id, "by": p.actor() }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enables a rule (admin): journals `rule.enable`.
#[utoipa::path(post, path = "/api/v1/rules/{id}/enable", tag = "rules",
    params(("id" = String, Path, description = "rule id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn enable(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    switch(&s, &p, &id, true).await
}

/// Disables a rule (admin): journals `rule.disable`.
#[utoipa::path(post, path = "/api/v1/rules/{id}/disable", tag = "rules",
    params(("id" = String, Path, description = "rule id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn disable(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    switch(&s, &p, &id, false).await
}

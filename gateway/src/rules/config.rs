//! `[rules]` in the gateway config: where the rule files are and what they may name.
//!
//! ```toml
//! [rules]
//! dir = "/etc/campusgw/rules"        # every *.toml in it, sorted by name
//! timezone = "Asia/Shanghai"         # schedules and calendars are read in this zone
//! reload_poll = "2s"                 # how often the directory is checked for changes
//! command_timeout = "10s"            # per attempt of a rule's command
//!
//! [[rules.notifier]]
//! name = "duty_group"
//! kind = "wechat_work"               # webhook | wechat_work | dingtalk
//! url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."
//! ```
//! Calendars (school hours, holidays, exams) are `[[calendar]]` tables in the rule files
//! themselves (docs/rules.md), so a term's holidays change with a reload, not a restart.

use std::path::PathBuf;

use campusgw_sdk::{ConfigIssue, FieldPath};
use serde::Deserialize;

use crate::config::HumanDuration;
use crate::notify::NotifierConfig;

/// `[rules]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    /// The rules directory.
    pub dir: PathBuf,
    /// IANA zone of schedules (default `Asia/Shanghai`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How often the directory is checked for changes (default 2 s); SIGHUP reloads at once.
    #[serde(default = "default_reload_poll")]
    pub reload_poll: HumanDuration,
    /// Timeout of one attempt of a rule's command (default 10 s).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// `[[rules.notifier]]`.
    #[serde(default, rename = "notifier")]
    pub notifiers: Vec<NotifierConfig>,
}

fn default_timezone() -> String {
    "Asia/Shanghai".into()
}

fn default_reload_poll() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}

fn default_command_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

impl RulesSection {
    /// The zone, parsed.
    ///
    /// # Errors
    /// A message naming the bad zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, String> {
        self.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            format!(
                "unknown time zone {:?} (an IANA name such as \"Asia/Shanghai\")",
                self.timezone
            )
        })
    }

    /// Pure checks, every problem with its path.
    pub fn check(&self, issues: &mut Vec<ConfigIssue>) {
        let at = FieldPath::root().key("rules");
        if let Err(m) = self.tz() {
            issues.push(ConfigIssue::new(at.key("timezone"), m));
        }
        if self.reload_poll.0 < std::time::Duration::from_millis(100) {
            issues.push(ConfigIssue::new(
                at.key("reload_poll"),
                "must be at least 100ms",
            ));
        }
        if self.command_timeout.0.is_zero() {
            issues.push(ConfigIssue::new(
                at.key("command_timeout"),
                "must be more than 0",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.notifiers.iter().enumerate() {
            let here = at.key("notifier").index(i);
            if !seen.insert(n.name.as_str()) {
                issues.push(ConfigIssue::new(
                    here.key("name"),
                    format!("notifier {:?} is defined twice", n.name),
                ));
            }
            if !(n.url.starts_with("https://") || n.url.starts_with("http://")) {
                issues.push(ConfigIssue::new(
                    here.key("url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if n.secret.is_some() && n.kind != crate::notify::NotifierKind::Dingtalk {
                issues.push(ConfigIssue::new(
                    here.key("secret"),
                    "only dingtalk robots take a signing secret",
                ));
            }
        }
    }
}

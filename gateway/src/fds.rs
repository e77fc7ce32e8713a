//! The file-descriptor budget (issue 8): raise `RLIMIT_NOFILE` to the hard limit at start,
//! then fit the listeners' connection caps under it with a reserve, so that no listener
//! can take the descriptors the journal, the uplinks, the drivers' outbound links or
//! another listener need.
//!
//! Each listener accepts then closes a connection over its cap, so its descriptors in use
//! never exceed its cap (plus the one being closed). The sum of caps plus [`RESERVE`] must
//! fit the limit; when it does not, the console's cap is lowered first (it is the least
//! important listener), and what still does not fit is logged as an error at start.

/// Descriptors kept for everything but listener connections: the journal database and
/// its WAL, the uplinks' connections, drivers' outbound links, the listening sockets.
pub const RESERVE: u64 = 64;

/// The console's cap is never lowered below this (the operator must still get in).
pub const MIN_CONSOLE_CAP: usize = 8;

/// Raises the soft open-files limit to the hard limit; returns the limit now in force
/// (`None` where it cannot be read). Logs the result.
pub fn raise_nofile() -> Option<u64> {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            tracing::info!(
                before = before.map(|(soft, _)| soft),
                hard = before.map(|(_, hard)| hard),
                now,
                "open-files limit (RLIMIT_NOFILE) raised to the hard limit"
            );
            Some(now)
        }
        Err(e) => {
            let soft = before.map(|(soft, _)| soft);
            tracing::warn!(error = %e, soft, "cannot raise the open-files limit; keeping it");
            soft
        }
    }
}

/// The console cap that fits `limit` beside the device listeners' caps and [`RESERVE`].
/// Logs what it clamps and what cannot fit.
pub fn fit_console_cap(limit: Option<u64>, console: usize, devices: &[(String, usize)]) -> usize {
    let Some(limit) = limit else { return console };
    let device_sum: u64 = devices.iter().map(|(_, n)| *n as u64).sum();
    let available = limit.saturating_sub(RESERVE).saturating_sub(device_sum);
    if device_sum + RESERVE > limit {
        tracing::error!(
            limit,
            reserve = RESERVE,
            device_listeners = device_sum,
            "the device listeners' max_connections and the reserve exceed the open-files limit: lower their max_connections or raise the limit (LimitNOFILE=); a flood could then starve the journal"
        );
    }
    let console_fit = usize::try_from(available)
        .unwrap_or(usize::MAX)
        .max(MIN_CONSOLE_CAP);
    if console > console_fit {
        tracing::warn!(
            limit,
            reserve = RESERVE,
            device_listeners = device_sum,
            configured = console,
            now = console_fit,
            "console max_connections lowered to fit the open-files limit"
        );
        return console_fit;
    }
    tracing::info!(
        limit,
        reserve = RESERVE,
        device_listeners = device_sum,
        console = console,
        "descriptor budget fits"
    );
    console
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_cap_is_lowered_to_fit_beside_device_listeners() {
        let devices = vec![("fire".to_owned(), 100)];
        assert_eq!(fit_console_cap(Some(256), 256, &devices), 256 - 64 - 100);
        assert_eq!(fit_console_cap(Some(4096), 256, &devices), 256);
        assert_eq!(fit_console_cap(Some(100), 256, &devices), MIN_CONSOLE_CAP);
        assert_eq!(fit_console_cap(None, 256, &devices), 256);
    }
}

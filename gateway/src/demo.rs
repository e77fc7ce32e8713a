//! `campusgw demo`: a simulated school.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Runs the demo.
///
/// # Errors
/// Start-up failures.
pub async fn run(
    _data_dir: Option<PathBuf>,
    _listen: SocketAddr,
    _duration: Option<Duration>,
) -> anyhow::Result<i32> {
    anyhow::bail!("the demo is being assembled")
}

//! The `campusgw` binary: parses the command line and runs it on a tokio runtime.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = campusgw::cli::Cli::parse();
    // One TLS crypto provider for the whole process (rustls is built without a default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAMPUSGW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(campusgw::cli::dispatch(cli))?;
    std::process::exit(code)
}

//! `sluice serve`: the service hosting many tenants' pipelines, until a
//! signal stops it (the first finishes every pipeline's batches in flight
//! and checkpoints them; a second exits at once).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use sluice::control::http;
use sluice::service::{Options, Service, api};

/// The service's settings from the command line.
pub struct ServeArgs {
    pub data: PathBuf,
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub workers: Option<usize>,
    pub allow_network: bool,
    pub idle_release: Duration,
}

/// How often state quotas are looked at.
const STATE_SWEEP: Duration = Duration::from_secs(5);

/// `sluice serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = sluice::failpoint::arm_from_env() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(http::tls_acceptor(cert, key).map_err(anyhow::Error::msg)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(2, 8))
        .thread_name("sluice-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let options = Options {
        data: args.data.clone(),
        workers: args.workers.unwrap_or(cores),
        allow_network: args.allow_network,
        release_idle: args.idle_release,
    };
    let admin = std::env::var("SLUICE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let (service, written) = Service::open(&options, runtime.handle().clone(), admin)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(path) = written {
        tracing::info!(
            "admin token created in {} (only this user can read it)",
            path.display()
        );
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&args.listen))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    runtime.spawn(http::serve_tls(
        listener,
        api::router(service.clone()),
        http::Limits {
            connections: 256,
            ..http::Limits::default()
        },
        tls,
    ));
    tracing::info!(
        "sluice serve on {scheme}://{address} with {} stage worker(s), data in {}",
        options.workers,
        args.data.display()
    );
    // Pipelines come back in the background; the API answers meanwhile.
    let restoring = service.clone();
    std::thread::Builder::new()
        .name("sluice-restore".into())
        .spawn(move || restoring.restore())?;
    let sweeping = Arc::downgrade(&service);
    std::thread::Builder::new()
        .name("sluice-quotas".into())
        .spawn(move || {
            loop {
                std::thread::sleep(STATE_SWEEP);
                match sweeping.upgrade() {
                    Some(service) => service.enforce_state_quotas(),
                    None => return,
                }
            }
        })?;
    runtime.block_on(signals());
    tracing::info!(
        "stopping: finishing every pipeline's batches in flight (signal again to exit at once)"
    );
    let stopping = service.clone();
    let done = std::thread::spawn(move || stopping.shutdown());
    runtime.spawn(async {
        signals().await;
        eprintln!("sluice: interrupted again, exiting now");
        std::process::exit(130);
    });
    let _ = done.join();
    tracing::info!("stopped");
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(ExitCode::SUCCESS)
}

/// The next SIGINT or SIGTERM.
async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

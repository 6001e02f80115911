//! `sluice run` and `sluice check`: pipeline files read, resolved against
//! their folders, checked, and (for `run`) handed to a supervisor until they
//! end or a signal stops them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use sluice::config::{FolderBase, PipelineFile, PipelineSpec, checks};
use sluice::control::{http, local, token};
use sluice::pipeline::{build_sources, check_stages};
use sluice::plugin::{PluginHost, Slots};
use sluice::reload::watch_files;
use sluice::supervisor::{OnEnd, Supervisor};

/// Reads and resolves each file; the first problem in a file is its error.
/// Two files may not declare pipelines of the same name.
fn load_all(files: &[PathBuf]) -> Vec<Result<PipelineSpec, String>> {
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    files
        .iter()
        .map(|path| {
            let spec = PipelineFile::load(path)
                .and_then(|file| file.resolve(&FolderBase::of_file(path)))
                .map_err(|e| e.to_string())?;
            if let Some(first) = seen.insert(spec.name.clone(), path.clone()) {
                return Err(format!(
                    "{}: pipeline `{}` is also declared in {}: pipelines in one process need \
                     names of their own (they name state files, output files and metrics)",
                    path.display(),
                    spec.name,
                    first.display()
                ));
            }
            Ok(spec)
        })
        .collect()
}

/// Instance slots for these pipelines: up to three per stage (the live
/// instance, a fallback on probation, one being prepared). A pipeline with
/// a task per partition has as many instances of each stage as the group
/// gives this process partitions, which is not known in advance: memory is
/// then mapped for each instance as it is made.
fn slots_for(specs: &[PipelineSpec]) -> Slots {
    if specs.iter().any(PipelineSpec::per_partition) {
        return Slots::OnDemand;
    }
    let stages: usize = specs.iter().map(|s| s.stages.len()).sum();
    Slots::for_stages(stages)
}

/// `sluice run FILE…`: with `control` (an address, or `off`) for `sluice
/// deploy`/`status`/`rollback`, and `metrics` (an address) for `/metrics`
/// and the dashboard.
pub fn run(
    files: Vec<PathBuf>,
    control: &str,
    metrics: Option<&str>,
    watch_plugins: bool,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = sluice::failpoint::arm_from_env() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let mut specs = Vec::new();
    for loaded in load_all(&files) {
        match loaded {
            Ok(spec) => specs.push(spec),
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    for spec in &specs {
        if let Err(err) = checks::check_folders(spec, false) {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(2));
        }
    }
    if let Err(err) = checks::check_across(&specs) {
        eprintln!("error: {err}");
        return Ok(ExitCode::from(2));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let host = Arc::new(PluginHost::with_slots(slots_for(&specs))?);
    // One pipeline failing (or, by a bug, panicking) stops the others too,
    // gracefully, and the process exits 1.
    let stop_all: Arc<std::sync::OnceLock<std::sync::Weak<Supervisor>>> = Arc::default();
    let on_end: OnEnd = {
        let stop_all = stop_all.clone();
        Box::new(move |_, outcome| {
            if outcome.is_err() {
                if let Some(supervisor) = stop_all.get().and_then(|w| w.upgrade()) {
                    supervisor.stop_all();
                }
            }
        })
    };
    let supervisor = Supervisor::new(host.clone(), runtime.handle().clone(), Some(on_end));
    let _ = stop_all.set(Arc::downgrade(&supervisor));
    // Before anything is built: a signal while plugins compile or stages
    // start must stop the run gracefully, not kill it (the pipelines are
    // then launched already stopping, and end at once).
    let signals = {
        let _guard = runtime.enter();
        Signals::install()
    };
    runtime.spawn(watch_signals(signals, supervisor.clone()));
    // Every pipeline is built before any runs, so a bad one stops the run
    // before another has read anything.
    let mut built = Vec::new();
    for spec in &specs {
        let _guard = runtime.enter();
        match sluice::supervisor::Runnable::build(spec, &host) {
            Ok(pipeline) => built.push((sluice::supervisor::PipelineKey::of(spec), pipeline)),
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let stages: Vec<_> = built
        .iter()
        .flat_map(|(_, pipeline)| pipeline.stage_entries())
        .collect();
    let _file_watch = if watch_plugins && !stages.is_empty() {
        match watch_files(host.clone(), stages) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch plugin files ({e}); new versions only through `sluice deploy`"
                );
                None
            }
        }
    } else {
        None
    };
    // One token for the control endpoint and the dashboard's data; the
    // files naming it are removed when the run ends.
    let secret = token::generate().context("making the control token")?;
    let _token_file = start_control(&runtime, control, &supervisor, &secret);
    let _metrics_token_file = match metrics {
        Some(address) => match start_metrics(&runtime, address, &supervisor, &secret) {
            Ok(file) => file,
            Err(err) => {
                eprintln!("error: --metrics: {err}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    for (key, pipeline) in built {
        supervisor.launch(key, pipeline)?;
    }
    let mut failed = false;
    for (_, outcome) in supervisor.wait_all() {
        if let Err(err) = outcome {
            eprintln!("error: {err}");
            failed = true;
        }
    }
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Starts the control endpoint on `control` (unless `off`), with a fresh
/// token in a file only this user can read; returns that file, which is
/// removed when dropped.
fn start_control(
    runtime: &tokio::runtime::Runtime,
    control: &str,
    supervisor: &Arc<Supervisor>,
    secret: &str,
) -> Vec<token::TokenFile> {
    if control == "off" {
        return Vec::new();
    }
    let listening = runtime
        .block_on(tokio::net::TcpListener::bind(control))
        .and_then(|listener| Ok((listener.local_addr()?, listener)));
    let (address, listener) = match listening {
        Ok(bound) => bound,
        Err(e) => {
            tracing::warn!("control endpoint not started: cannot listen on {control}: {e}");
            return Vec::new();
        }
    };
    let file = match token::TokenFile::write(&address.to_string(), secret) {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!("control endpoint not started: cannot write its token file: {e}");
            return Vec::new();
        }
    };
    let mut files = vec![];
    // Listening on every address: the commands' default loopback address
    // finds the token too.
    if address.ip().is_unspecified() {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], address.port()));
        if let Ok(extra) = token::TokenFile::write(&local.to_string(), secret) {
            files.push(extra);
        }
    }
    tracing::info!(
        "control endpoint on http://{address}, token in {} (sluice deploy / status / rollback --control {address} read it)",
        file.path().display()
    );
    let router = local::router(supervisor.clone(), secret, address);
    runtime.spawn(http::serve(listener, router, http::Limits::default()));
    files.push(file);
    files
}

/// Starts `/metrics` and the dashboard on `address`; the page's data asks
/// for `secret`, which is also written to a token file named after this
/// address (returned: removed when dropped). Unlike the control endpoint,
/// an address that cannot be listened on stops the run: the user asked
/// for metrics, and a scraper would silently see nothing.
fn start_metrics(
    runtime: &tokio::runtime::Runtime,
    address: &str,
    supervisor: &Arc<Supervisor>,
    secret: &str,
) -> anyhow::Result<Option<token::TokenFile>> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let file = match token::TokenFile::write(&bound.to_string(), secret) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!("cannot write the dashboard's token file: {e}");
            None
        }
    };
    let shown = if bound.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    };
    tracing::info!(
        "metrics on http://{shown}/metrics, dashboard on http://{shown}/ui/ (its data needs the token in {})",
        file.as_ref().map_or("the control token file".into(), |f| f
            .path()
            .display()
            .to_string())
    );
    let router = sluice::dashboard::run_router(supervisor.clone(), secret);
    runtime.spawn(http::serve(listener, router, http::Limits::default()));
    Ok(file)
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Installs the handlers (within the runtime).
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Signals(Some((int, term))),
            _ => {
                tracing::warn!("cannot install signal handlers; Ctrl-C will stop sluice abruptly");
                Signals(None)
            }
        }
    }
}

/// First SIGINT/SIGTERM: finish gracefully. Second: exit now.
async fn watch_signals(signals: Signals, supervisor: Arc<Supervisor>) {
    let Some((mut int, mut term)) = signals.0 else {
        return;
    };
    for round in 0.. {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            tracing::info!(
                "stopping: finishing the records already read (signal again to exit at once)"
            );
            supervisor.stop_all();
        } else {
            eprintln!("sluice: interrupted again, exiting now");
            std::process::exit(130);
        }
    }
}

/// `sluice check FILE…`.
pub fn check(files: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let loaded = load_all(&files);
    let specs: Vec<PipelineSpec> = loaded
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let host = PluginHost::with_slots(slots_for(&specs))?;
    let mut ok = true;
    if let Err(err) = checks::check_across(&specs) {
        eprintln!("error: {err}");
        ok = false;
    }
    for (path, result) in files.iter().zip(loaded) {
        let result = result.and_then(|spec| {
            let uses_state = check_stages(&spec, &host).map_err(|e| e.to_string())?;
            checks::check_folders(&spec, uses_state).map_err(|e| e.to_string())?;
            build_sources(&spec).map_err(|e| e.to_string())?;
            if uses_state || spec.needs_state_file() {
                note_state_in_use(&spec);
            }
            Ok(spec)
        });
        match result {
            Ok(spec) => println!(
                "ok: {} — pipeline `{}`: {} source(s), {} stage(s), {} sink(s), batch interval {}",
                path.display(),
                spec.name,
                spec.sources.len(),
                spec.stages.len(),
                spec.sinks.len(),
                sluice::config::HumanDuration(spec.interval)
            ),
            Err(err) => {
                eprintln!("error: {err}");
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Says so when another process holds the pipeline's state file: `run`
/// would refuse it until that process ends (a running pipeline being
/// checked is the common case, so this is a note, not an error).
fn note_state_in_use(spec: &PipelineSpec) {
    let file = spec.state_dir.join(format!("{}.redb", spec.name));
    if let Some(holder) = sluice::state::holder(&file) {
        eprintln!(
            "note: {} is in use by {holder}; `sluice run` will refuse it until that process ends",
            file.display()
        );
    }
}

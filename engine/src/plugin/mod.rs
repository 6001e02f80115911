//! The Wasm host: one process-wide [`PluginHost`] (a wasmtime `Engine` with
//! the pooling allocator and epoch interruption, a `Linker` with exactly the
//! imports plugins may use, an epoch ticker), plugins compiled once per file
//! into a [`Plugin`] (a pre-linked `InstancePre`), and [`Instance`]s with
//! their own memory and CPU limits. Which batches go through an instance, and
//! what happens when one fails, is the business of `stage`.

mod bindings;
mod cache;
mod inspect;
mod instance;
pub mod project;
mod sandbox;
mod stdio;
mod tester;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use inspect::{Inspection, inspect};
pub use instance::{CallError, CallInfo, Grants, Instance, Limits, Output, StateView};
pub use tester::{TestReport, test_plugin};

use bindings::{Stage, StagePre};
use instance::InstanceState;

/// The WIT world every plugin must implement, as shown to users.
pub const WORLD: &str = "sluice:plugin/stage@0.1.0";

/// How often the epoch advances; CPU limits are rounded up to this.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slots {
    /// A pool of this many instance slots, reserved at start (the fastest
    /// instantiation; each slot reserves address space, not memory).
    Pooled(u32),
    /// Memory mapped for each instance as it is made: no fixed number of
    /// instances, so what a process admits is bounded by its quotas alone
    /// (`sluice serve`).
    OnDemand,
}

impl Slots {
    /// Enough pooled slots for `stages` stages (each holds up to three
    /// instances at once: the live one, a fallback on probation, one
    /// being prepared), and at least 16.
    pub fn for_stages(stages: usize) -> Slots {
        Slots::Pooled((stages.saturating_mul(3) + 4).clamp(16, 4096) as u32)
    }
}

/// Largest linear memory any instance may have; per-stage limits are lower.
const MAX_MEMORY: u64 = 4 << 30;

/// Largest plugin file read or accepted, in bytes: a component this size
/// is already far beyond any real plugin (the Python runtime is ~40 MB),
/// and a larger read could be used to exhaust the host's memory.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// Who a log line from a plugin belongs to.
#[derive(Debug, Clone)]
pub struct LogTag {
    /// The pipeline's name.
    pub pipeline: String,
    /// The stage's name.
    pub stage: String,
    /// The plugin, as `file.wasm@hash`.
    pub plugin: String,
}

/// The Wasm runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly engine: {0}")]
pub struct HostError(String);

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {}: {source}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path is not a regular file (a folder, a device such as
    /// `/dev/zero`, a FIFO).
    #[error("plugin {} is not a regular file", path.display())]
    NotAFile {
        /// The plugin path.
        path: PathBuf,
    },
    /// The file is larger than any plugin may be.
    #[error("plugin {} is larger than the limit of {} MiB for a plugin", path.display(), MAX_PLUGIN_BYTES >> 20)]
    TooLarge {
        /// The plugin file.
        path: PathBuf,
    },
    /// The file is not WebAssembly at all.
    #[error("plugin {} is not a WebAssembly file (it does not start with `\\0asm`)", path.display())]
    NotWasm {
        /// The plugin file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "plugin {} is a core WebAssembly module, not a component: build it for the \
         `wasm32-wasip2` target (or wrap it with `wasm-tools component new`)",
        path.display()
    )]
    NotComponent {
        /// The plugin file.
        path: PathBuf,
    },
    /// wasmtime rejected the component.
    #[error("plugin {} does not compile: {message}", path.display())]
    Compile {
        /// The plugin file.
        path: PathBuf,
        /// wasmtime's reason.
        message: String,
    },
    /// The component imports something the engine does not grant.
    #[error("plugin {} cannot be linked: {message}", path.display())]
    Link {
        /// The plugin file.
        path: PathBuf,
        /// wasmtime's reason, naming the import.
        message: String,
    },
    /// The component does not export the Sluice processor.
    #[error(
        "plugin {} is not a `{WORLD}` component: {message} (its exports: {exports})",
        path.display()
    )]
    WrongWorld {
        /// The plugin file.
        path: PathBuf,
        /// What is missing or mistyped.
        message: String,
        /// What it exports instead.
        exports: String,
    },
}

/// A compiled, pre-linked plugin version, ready to instantiate.
pub struct Plugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The name it goes by, when not its file's (a hosted tenant's plugin
    /// is stored by digest).
    pub name: Option<String>,
    /// SHA-256 of the file (hex), identifying this version.
    pub hash: String,
    /// Whether it imports the `state` interface.
    pub uses_state: bool,
    pre: StagePre<InstanceState>,
}

impl Plugin {
    /// `file.wasm@hash`, for logs and errors.
    pub fn label(&self) -> String {
        let name = self.name.clone().unwrap_or_else(|| {
            self.path.file_name().map_or_else(
                || self.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        format!("{name}@{}", &self.hash[..8])
    }
}

/// The process-wide Wasm runtime.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<InstanceState>,
    ticker_stop: Arc<AtomicBool>,
    /// Compiled plugins by file and content hash: each version compiles once.
    loaded: Mutex<HashMap<(PathBuf, String), Arc<Plugin>>>,
    /// Compiled components on disk, across runs.
    cache: cache::CompileCache,
}

impl PluginHost {
    /// Creates the engine, the linker and the epoch ticker, with a small
    /// pool of instance slots (for the plugin tools).
    pub fn new() -> Result<Self, HostError> {
        Self::with_slots(Slots::Pooled(16))
    }

    /// Creates the engine with `slots` for instances.
    pub fn with_slots(slots: Slots) -> Result<Self, HostError> {
        Self::start(slots).map_err(|e| HostError(format!("{e:#}")))
    }

    fn start(slots: Slots) -> Result<Self, wasmtime::Error> {
        let engine = match Engine::new(&engine_config(slots)) {
            Ok(engine) => engine,
            Err(err) if slots != Slots::OnDemand => {
                tracing::warn!(
                    "pooling allocator unavailable ({err}); falling back to on-demand instance allocation"
                );
                Engine::new(&engine_config(Slots::OnDemand))?
            }
            Err(err) => return Err(err),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        sandbox::add_no_wait_clock(&mut linker)?;
        Stage::add_to_linker::<_, wasmtime::component::HasSelf<InstanceState>>(&mut linker, |s| s)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        let cache = cache::CompileCache::new(&engine);
        Ok(PluginHost {
            engine,
            linker,
            ticker_stop,
            loaded: Mutex::new(HashMap::new()),
            cache,
        })
    }

    /// Reads, compiles and links a plugin, checking it implements the world.
    /// Slow the first time (it compiles): call it off the batch path. The
    /// same file with the same content is compiled once.
    pub fn load(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = read_plugin(path)?;
        let key = (path.to_path_buf(), content_hash(&bytes));
        if let Some(plugin) = self.loaded.lock().unwrap().get(&key) {
            return Ok(plugin.clone());
        }
        check_header(path, &bytes)?;
        let component = self.compile(path, &bytes, &key.1)?;
        let plugin = self.link(path, key.1.clone(), component)?;
        self.loaded.lock().unwrap().insert(key, plugin.clone());
        Ok(plugin)
    }

    /// [`PluginHost::load`], the version going by `name` (`file.wasm`) in
    /// logs and status instead of the file's own name.
    pub fn load_as(&self, path: &Path, name: Option<&str>) -> Result<Arc<Plugin>, LoadError> {
        let plugin = self.load(path)?;
        match name {
            None => Ok(plugin),
            Some(name) => Ok(Arc::new(Plugin {
                path: plugin.path.clone(),
                name: Some(name.to_string()),
                hash: plugin.hash.clone(),
                uses_state: plugin.uses_state,
                pre: plugin.pre.clone(),
            })),
        }
    }

    /// Compiles and links plugin bytes that came from `path`.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        if bytes.len() as u64 > MAX_PLUGIN_BYTES {
            return Err(LoadError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        check_header(path, bytes)?;
        let hash = content_hash(bytes);
        let component = self.compile(path, bytes, &hash)?;
        self.link(path, hash, component)
    }

    /// Compiles a component whose SHA-256 is `hash` (slow: Cranelift),
    /// unless the compiled-plugin cache has it.
    pub(crate) fn compile(
        &self,
        path: &Path,
        bytes: &[u8],
        hash: &str,
    ) -> Result<Component, LoadError> {
        self.cache
            .component(&self.engine, bytes, hash)
            .map_err(|e| LoadError::Compile {
                path: path.to_path_buf(),
                message: format!("{e:#}"),
            })
    }

    /// Links a compiled component and checks it implements the world.
    pub(crate) fn link(
        &self,
        path: &Path,
        hash: String,
        component: Component,
    ) -> Result<Arc<Plugin>, LoadError> {
        let path_buf = path.to_path_buf();
        let uses_state = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("sluice:plugin/state@"));
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Link {
                    path: path_buf.clone(),
                    message: format!("{e:#}"),
                })?;
        let pre = StagePre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            path: path_buf.clone(),
            message: format!("{e:#}"),
            exports: export_names(&self.engine, &component),
        })?;
        Ok(Arc::new(Plugin {
            path: path_buf,
            name: None,
            hash,
            uses_state,
            pre,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn engine_config(slots: Slots) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.concurrency_support(false);
    if let Slots::Pooled(instances) = slots {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances);
        pool.total_core_instances(instances * 4);
        pool.total_memories(instances * 2);
        pool.total_tables(instances * 4);
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(8);
        pool.max_memory_size(MAX_MEMORY as usize);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Reads a plugin file: a regular file of at most [`MAX_PLUGIN_BYTES`]
/// (never a device or FIFO, whose reads would not end).
pub fn read_plugin(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let failed = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = open_nonblocking(path).map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if !meta.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let too_large = || LoadError::TooLarge {
        path: path.to_path_buf(),
    };
    if meta.len() > MAX_PLUGIN_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never past the limit.
    file.take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Tells core modules and other files apart from components by the header.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_path_buf(),
        });
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::NotComponent {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn export_names(engine: &Engine, component: &Component) -> String {
    let names: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The SHA-256 of a plugin file, in hex: a version's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

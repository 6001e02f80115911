//! `sluice serve`: a long-running service that hosts many tenants'
//! pipelines and plugins. This module owns what the service keeps and
//! decides — tenants and their quotas, plugins by digest, pipeline
//! definitions and whether each should run, bringing them all back after a
//! restart — and leaves running pipelines to the supervisor (on the shared,
//! tenant-fair worker pools) and HTTP to `api`.
//!
//! Everything lives under the data folder `DIR`:
//!
//! ```text
//! DIR/catalog.redb                      tenants, token hashes, plugins, pipelines
//! DIR/admin-token                       the admin token (0600), unless SLUICE_ADMIN_TOKEN
//! DIR/tenants/<t>/plugins/<hex>.wasm    each stored plugin version, by SHA-256
//! DIR/tenants/<t>/files/                its files root: directory sources and sinks
//! DIR/tenants/<t>/state/                its pipelines' state files and write-ahead logs
//! DIR/tenants/<t>/dead-letter/<p>/<s>/  its dead letters
//! ```

pub mod api;
mod base;
mod catalog;
mod pipelines;
pub mod tenant;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::pipeline::{Pools, WorkerPool};
use crate::plugin::{MAX_PLUGIN_BYTES, PluginHost, Slots};
use crate::quota::{ByteMeter, RateMeter};
use crate::source::IngestPoints;
use crate::supervisor::{Executor, Supervisor};
use crate::units::ByteSize;

use catalog::Catalog;
pub use catalog::{Desired, PipelineRecord, PluginRecord, PluginVersion, TenantRecord};
use tenant::{Quotas, folder_bytes, new_token, token_hash};

/// How to run the service.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data folder.
    pub data: PathBuf,
    /// Workers of the stage pool (the plugins).
    pub workers: usize,
    /// Whether tenants' pipelines may reach network peers (Kafka brokers,
    /// socket servers).
    pub allow_network: bool,
    /// A stage with no records for this long drops its instance.
    pub release_idle: Duration,
}

/// Why a request to the service failed; `api` turns each into a status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Not there, or not the caller's (the two look the same).
    #[error("{0}")]
    NotFound(String),
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// Over a quota, named in the message.
    #[error("{0}")]
    Quota(String),
    /// Already there.
    #[error("{0}")]
    Conflict(String),
    /// Not taking this now (a stopped pipeline's ingest).
    #[error("{0}")]
    Unavailable(String),
    /// The service could not do it (a disk error, say).
    #[error("{0}")]
    Internal(String),
}

impl From<catalog::CatalogError> for ServiceError {
    fn from(e: catalog::CatalogError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

fn internal(what: &str) -> impl Fn(std::io::Error) -> ServiceError + '_ {
    move |e| ServiceError::Internal(format!("{what}: {e}"))
}

/// What the service meters per tenant.
pub struct Meters {
    /// Records ingested per second.
    pub ingest: RateMeter,
    /// Its API call rate, from its quotas.
    pub api_rate: std::sync::atomic::AtomicU64,
    /// API calls per second.
    pub api: RateMeter,
    /// Dead-letter bytes kept.
    pub dead_letters: Arc<ByteMeter>,
    /// One plugin compiled at a time per tenant.
    pub compiles: tokio::sync::Semaphore,
}

/// The service.
pub struct Service {
    data: PathBuf,
    catalog: Catalog,
    host: Arc<PluginHost>,
    supervisor: Arc<Supervisor>,
    pools: Pools,
    ingest: IngestPoints,
    admin_hash: String,
    /// Token hash → tenant.
    tokens: RwLock<HashMap<String, String>>,
    meters: Mutex<HashMap<String, Arc<Meters>>>,
    /// Errors of pipelines that could not start, by tenant/name.
    start_errors: Mutex<HashMap<(String, String), String>>,
    /// One change of a tenant's catalogue entries at a time, so quota
    /// checks see every earlier change; a lock per tenant, so that one
    /// tenant's slow change (a pipeline of its own that takes long to
    /// stop) never holds up another's.
    changes: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    allow_network: bool,
    release_idle: Duration,
}

impl Service {
    /// Opens the data folder (made if missing) with its admin token: the
    /// one given, or the one in `DIR/admin-token`, or a new one written
    /// there (returned as `Some` so it can be announced).
    pub fn open(
        options: &Options,
        runtime: tokio::runtime::Handle,
        admin_token: Option<String>,
    ) -> Result<(Arc<Service>, Option<PathBuf>), ServiceError> {
        let data = &options.data;
        make_private_dir(data).map_err(internal("cannot make the data folder"))?;
        let catalog = Catalog::open(data)?;
        let token_file = data.join("admin-token");
        let (admin, written) = match admin_token {
            Some(token) => (token, None),
            None => match std::fs::read_to_string(&token_file) {
                Ok(text) if !text.trim().is_empty() => (text.trim().to_string(), None),
                _ => {
                    let token = new_token().map_err(internal("cannot make a token"))?;
                    write_private(&token_file, format!("{token}\n").as_bytes())
                        .map_err(internal("cannot write the admin token"))?;
                    (token, Some(token_file))
                }
            },
        };
        let workers = options.workers.max(1);
        let pools = Pools {
            stages: WorkerPool::new("sluice-stage", workers, 1),
            sinks: WorkerPool::new("sluice-sink", (workers * 2).max(4), 2),
        };
        let host = Arc::new(
            PluginHost::with_slots(Slots::OnDemand)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
        );
        let supervisor =
            Supervisor::with_executor(host.clone(), runtime, Executor::Pools(pools.clone()), None);
        let service = Arc::new(Service {
            data: data.clone(),
            catalog,
            host,
            supervisor,
            pools,
            ingest: IngestPoints::default(),
            admin_hash: token_hash(&admin),
            tokens: RwLock::new(HashMap::new()),
            meters: Mutex::new(HashMap::new()),
            start_errors: Mutex::new(HashMap::new()),
            changes: Mutex::new(HashMap::new()),
            allow_network: options.allow_network,
            release_idle: options.release_idle,
        });
        for (name, record) in service.catalog.tenants()? {
            service
                .tokens
                .write()
                .unwrap()
                .insert(record.token_sha256.clone(), name.clone());
            service.apply_quotas(&name, &record.quotas);
        }
        Ok((service, written))
    }

    /// Starts every pipeline that should be running, from its checkpoint
    /// (call once, at start; slow: it compiles and initialises plugins).
    pub fn restore(&self) {
        let Ok(tenants) = self.catalog.tenants() else {
            return;
        };
        let mut started = 0;
        for (tenant, _) in tenants {
            let Ok(pipelines) = self.catalog.pipelines(&tenant) else {
                continue;
            };
            for (name, record) in pipelines {
                if record.desired != Desired::Running {
                    continue;
                }
                match self.start_record(&tenant, &name, &record) {
                    Ok(()) => started += 1,
                    Err(e) => {
                        tracing::error!(tenant = %tenant, pipeline = %name, "cannot start: {e}");
                        self.start_errors
                            .lock()
                            .unwrap()
                            .insert((tenant.clone(), name.clone()), e.to_string());
                    }
                }
            }
        }
        tracing::info!("restored {started} pipeline(s)");
    }

    /// Stops every pipeline gracefully (what their sources read is
    /// processed and checkpointed); they stay marked to run, so the next
    /// start brings them back.
    pub fn shutdown(&self) {
        self.supervisor.stop_all();
        self.supervisor.wait_all();
    }

    /// Who a bearer token belongs to.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let hash = token_hash(token);
        if crate::control::token::same(&hash, &self.admin_hash) {
            return Some(Caller::Admin);
        }
        self.tokens
            .read()
            .unwrap()
            .get(&hash)
            .map(|t| Caller::Tenant(t.clone()))
    }

    /// The running pipelines (for `/metrics` and the dashboard).
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// The lock for changes of `tenant`'s entries (see `changes`).
    pub(crate) fn changing(&self, tenant: &str) -> Arc<Mutex<()>> {
        self.changes
            .lock()
            .unwrap()
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// A tenant's meters.
    pub fn meters(&self, tenant: &str) -> Arc<Meters> {
        self.meters
            .lock()
            .unwrap()
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(Meters {
                    ingest: RateMeter::default(),
                    api_rate: std::sync::atomic::AtomicU64::new(Quotas::default().api_rate),
                    api: RateMeter::default(),
                    dead_letters: Arc::new(ByteMeter::new(
                        "dead_letter_bytes",
                        folder_bytes(&self.tenant_dir(tenant).join("dead-letter")),
                        Quotas::default().dead_letter_bytes.0,
                    )),
                    compiles: tokio::sync::Semaphore::new(1),
                })
            })
            .clone()
    }

    fn apply_quotas(&self, tenant: &str, quotas: &Quotas) {
        let meters = self.meters(tenant);
        meters.dead_letters.set_limit(quotas.dead_letter_bytes.0);
        meters
            .api_rate
            .store(quotas.api_rate, std::sync::atomic::Ordering::Relaxed);
        self.pools
            .stages
            .set_share(Some(tenant), quotas.cpu_share as usize);
        self.pools
            .sinks
            .set_share(Some(tenant), (quotas.cpu_share as usize) * 2);
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.data.join("tenants").join(tenant)
    }

    /// A tenant's quotas (the defaults for one that is gone).
    pub fn quotas(&self, tenant: &str) -> Result<Quotas, ServiceError> {
        Ok(self
            .catalog
            .tenant(tenant)?
            .map(|r| r.quotas)
            .unwrap_or_default())
    }

    // ----- tenants (admin) -----

    /// Creates a tenant; returns its token (shown once).
    pub fn create_tenant(&self, name: &str, quotas: Quotas) -> Result<String, ServiceError> {
        crate::config::check_name("tenant name", name).map_err(ServiceError::BadRequest)?;
        if name.len() > 64 {
            return Err(ServiceError::BadRequest(format!(
                "tenant name `{name}` is longer than 64 characters"
            )));
        }
        quotas.validate().map_err(ServiceError::BadRequest)?;
        let lock = self.changing(name);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.catalog.tenant(name)?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "tenant `{name}` exists already"
            )));
        }
        let token = new_token().map_err(internal("cannot make a token"))?;
        let dir = self.tenant_dir(name);
        for sub in ["files", "plugins", "state", "dead-letter"] {
            make_private_dir(&dir.join(sub))
                .map_err(internal("cannot make the tenant's folders"))?;
        }
        let record = TenantRecord {
            token_sha256: token_hash(&token),
            quotas: quotas.clone(),
            created_ms: crate::batch::now_ms(),
        };
        self.catalog.set_tenant(name, Some(&record))?;
        self.tokens
            .write()
            .unwrap()
            .insert(record.token_sha256, name.to_string());
        self.apply_quotas(name, &quotas);
        tracing::info!(tenant = %name, "tenant created");
        Ok(token)
    }

    /// Every tenant with its quotas and what it uses.
    pub fn tenants(&self) -> Result<Vec<serde_json::Value>, ServiceError> {
        self.catalog
            .tenants()?
            .into_iter()
            .map(|(name, record)| self.tenant_json(&name, &record))
            .collect()
    }

    fn tenant_json(
        &self,
        name: &str,
        record: &TenantRecord,
    ) -> Result<serde_json::Value, ServiceError> {
        let usage = self.usage(name)?;
        Ok(serde_json::json!({
            "name": name,
            "quotas": record.quotas,
            "usage": usage,
            "created_ms": record.created_ms,
        }))
    }

    /// What a tenant uses, against its quotas.
    pub fn usage(&self, tenant: &str) -> Result<serde_json::Value, ServiceError> {
        let pipelines = self.catalog.pipelines(tenant)?;
        let plugin_bytes: u64 = self
            .catalog
            .plugins(tenant)?
            .iter()
            .flat_map(|(_, p)| p.versions.iter().map(|v| v.size))
            .sum();
        let dir = self.tenant_dir(tenant);
        let (cores, low) = self.pools.stages.cpu(Some(tenant));
        Ok(serde_json::json!({
            "cpu": {
                "cores": (cores * 100.0).round() / 100.0,
                "priority": if low { "low" } else { "normal" },
            },
            "pipelines": pipelines.len(),
            "plugin_bytes": ByteSize(plugin_bytes),
            "state_bytes": ByteSize(folder_bytes(&dir.join("state"))),
            "dead_letter_bytes": ByteSize(folder_bytes(&dir.join("dead-letter"))),
        }))
    }

    /// Changes a tenant's quotas (what it already has stays; new requests
    /// meet the new limits).
    pub fn set_quotas(&self, name: &str, patch: serde_json::Value) -> Result<Quotas, ServiceError> {
        let lock = self.changing(name);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self
            .catalog
            .tenant(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no tenant `{name}`")))?;
        let mut merged = serde_json::to_value(&record.quotas)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let patch = match patch.get("quotas") {
            Some(q) => q.clone(),
            None => patch,
        };
        let serde_json::Value::Object(fields) = patch else {
            return Err(ServiceError::BadRequest(
                "expected {\"quotas\": {…}} with the quotas to change".into(),
            ));
        };
        for (k, v) in fields {
            merged[k] = v;
        }
        let quotas: Quotas = serde_json::from_value(merged)
            .map_err(|e| ServiceError::BadRequest(format!("quotas: {e}")))?;
        quotas.validate().map_err(ServiceError::BadRequest)?;
        record.quotas = quotas.clone();
        self.catalog.set_tenant(name, Some(&record))?;
        self.apply_quotas(name, &quotas);
        Ok(quotas)
    }

    /// Removes a tenant: stops and forgets its pipelines, deletes its data.
    pub fn delete_tenant(&self, name: &str) -> Result<(), ServiceError> {
        let lock = self.changing(name);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        let record = self
            .catalog
            .tenant(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no tenant `{name}`")))?;
        let names: Vec<String> = self
            .catalog
            .pipelines(name)?
            .into_iter()
            .map(|(pipeline, _)| pipeline)
            .collect();
        let keys: Vec<_> = names.iter().map(|p| pipelines::key(name, p)).collect();
        for pool in [&self.pools.stages, &self.pools.sinks] {
            pool.set_leaving(Some(name), true);
        }
        // Its data goes: what its pipelines hold is dropped, not finished.
        self.supervisor.discard(&keys);
        for pool in [&self.pools.stages, &self.pools.sinks] {
            pool.set_leaving(Some(name), false);
        }
        for pipeline in &names {
            self.catalog.set_pipeline(name, pipeline, None)?;
        }
        for (plugin, _) in self.catalog.plugins(name)? {
            self.catalog.set_plugin(name, &plugin, None)?;
        }
        self.catalog.set_tenant(name, None)?;
        self.tokens.write().unwrap().remove(&record.token_sha256);
        self.meters.lock().unwrap().remove(name);
        let _ = std::fs::remove_dir_all(self.tenant_dir(name));
        tracing::info!(tenant = %name, "tenant deleted with its pipelines and data");
        Ok(())
    }

    /// Gives a tenant a new token; the old one stops working at once.
    pub fn rotate_token(&self, name: &str) -> Result<String, ServiceError> {
        let lock = self.changing(name);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self
            .catalog
            .tenant(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no tenant `{name}`")))?;
        let token = new_token().map_err(internal("cannot make a token"))?;
        let old = std::mem::replace(&mut record.token_sha256, token_hash(&token));
        self.catalog.set_tenant(name, Some(&record))?;
        let mut tokens = self.tokens.write().unwrap();
        tokens.remove(&old);
        tokens.insert(record.token_sha256, name.to_string());
        Ok(token)
    }

    // ----- plugins (tenant) -----

    /// Stores a plugin version under `name`, after checking it is a stage
    /// component; the same bytes again are the same version.
    pub fn push_plugin(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(PluginVersion, bool), ServiceError> {
        check_plugin_name(name)?;
        let digest = format!("sha256:{}", crate::plugin::content_hash(bytes));
        let shown = PathBuf::from(format!("{name}.wasm"));
        // Compiled and linked as a stage before anything is stored.
        self.host
            .load_bytes(&shown, bytes)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let lock = self.changing(tenant);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.catalog.plugin(tenant, name)?.unwrap_or_default();
        if let Some(existing) = record.versions.iter().find(|v| v.digest == digest) {
            return Ok((existing.clone(), false));
        }
        let quota = self.quotas(tenant)?.plugin_bytes;
        let used: u64 = self
            .catalog
            .plugins(tenant)?
            .iter()
            .flat_map(|(_, p)| p.versions.iter().map(|v| v.size))
            .sum();
        if used + bytes.len() as u64 > quota.0 {
            return Err(ServiceError::Quota(format!(
                "quota `plugin_bytes` of {quota} would be exceeded ({} stored, {} more)",
                ByteSize(used),
                ByteSize(bytes.len() as u64)
            )));
        }
        let path = self.blob(tenant, &digest);
        write_private(&path, bytes).map_err(internal("cannot store the plugin"))?;
        let version = PluginVersion {
            digest,
            size: bytes.len() as u64,
            uploaded_ms: crate::batch::now_ms(),
        };
        record.versions.push(version.clone());
        self.catalog.set_plugin(tenant, name, Some(&record))?;
        tracing::info!(tenant = %tenant, plugin = %name, digest = %version.digest, "plugin stored");
        Ok((version, true))
    }

    fn blob(&self, tenant: &str, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.tenant_dir(tenant)
            .join("plugins")
            .join(format!("{hex}.wasm"))
    }

    /// A tenant's plugin file: the version with `digest`, or the latest.
    fn find_plugin(
        &self,
        tenant: &str,
        name: &str,
        digest: Option<&str>,
    ) -> Result<(PathBuf, String), String> {
        let record = self
            .catalog
            .plugin(tenant, name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no plugin `{name}` (upload it with PUT /v1/plugins/{name})"))?;
        let version = match digest {
            Some(digest) => record
                .versions
                .iter()
                .find(|v| v.digest == digest)
                .ok_or_else(|| format!("plugin `{name}` has no version {digest}"))?,
            None => record
                .versions
                .last()
                .ok_or_else(|| format!("no plugin `{name}`"))?,
        };
        Ok((self.blob(tenant, &version.digest), version.digest.clone()))
    }

    /// A tenant's plugins.
    pub fn plugins(&self, tenant: &str) -> Result<Vec<serde_json::Value>, ServiceError> {
        Ok(self
            .catalog
            .plugins(tenant)?
            .into_iter()
            .map(|(name, record)| plugin_json(&name, &record))
            .collect())
    }

    /// One of a tenant's plugins.
    pub fn plugin(&self, tenant: &str, name: &str) -> Result<serde_json::Value, ServiceError> {
        let record = self
            .catalog
            .plugin(tenant, name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no plugin `{name}`")))?;
        Ok(plugin_json(name, &record))
    }
}

fn plugin_json(name: &str, record: &PluginRecord) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "digest": record.versions.last().map(|v| v.digest.clone()),
        "versions": record.versions,
    })
}

/// Plugin names: the characters of a pipeline name.
fn check_plugin_name(name: &str) -> Result<(), ServiceError> {
    crate::config::check_name("plugin name", name).map_err(ServiceError::BadRequest)?;
    if name.ends_with(".wasm") {
        return Err(ServiceError::BadRequest(format!(
            "plugin name `{name}`: name it without `.wasm`"
        )));
    }
    Ok(())
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator.
    Admin,
    /// A tenant, by name.
    Tenant(String),
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a file only this user can read, through a temporary name.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Largest plugin upload.
pub const MAX_UPLOAD: u64 = MAX_PLUGIN_BYTES;

//! A tenant's pipelines in the service: applying a pipeline file (checked
//! exactly as `sluice check` checks one, then against the tenant's quotas),
//! starting, stopping and deleting, status, new plugin versions for a
//! stage, ingest, dead letters, and the watch on state bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::base::TenantBase;
use super::catalog::{Desired, PipelineRecord};
use super::tenant::folder_bytes;
use super::{Service, ServiceError};
use crate::config::{PipelineFile, PipelineSpec, checks};
use crate::source::IngestError;
use crate::supervisor::{PipelineKey, RunState};
use crate::units::ByteSize;

/// Longest wait of an ingest request for the `http` source of a pipeline
/// that has just started (see [`Service::ingest_limit`]).
pub const INGEST_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The key of a tenant's pipeline.
pub fn key(tenant: &str, name: &str) -> PipelineKey {
    PipelineKey {
        tenant: Some(tenant.to_string()),
        name: name.to_string(),
    }
}

/// The name a hosted pipeline's errors give its file.
fn file_name(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.toml"))
}

impl Service {
    /// Resolves `text` as tenant `tenant`'s pipeline `name`, with stages
    /// pinned to `pins` where the file names no version; returns the spec
    /// and each stage's plugin digest.
    fn resolve(
        &self,
        tenant: &str,
        name: &str,
        text: &str,
        pins: &BTreeMap<String, String>,
    ) -> Result<(PipelineSpec, BTreeMap<String, String>), ServiceError> {
        crate::config::check_name("pipeline name", name).map_err(ServiceError::BadRequest)?;
        let file = PipelineFile::parse(&file_name(name), text.to_string())
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        if file.config.name.get_ref() != name {
            return Err(ServiceError::BadRequest(
                file.error_at(
                    file.config.name.span(),
                    format!(
                        "the file names the pipeline `{}`, the request `{name}`",
                        file.config.name.get_ref()
                    ),
                )
                .to_string(),
            ));
        }
        let dir = self.tenant_dir(tenant);
        let files = dir
            .join("files")
            .canonicalize()
            .map_err(|e| ServiceError::Internal(format!("the tenant's files root: {e}")))?;
        let find = |plugin: &str, digest: Option<&str>| self.find_plugin(tenant, plugin, digest);
        let base = TenantBase {
            tenant,
            files,
            state: dir.join("state"),
            dead_letters: dir.join("dead-letter"),
            plugins: &find,
            pins,
            allow_network: self.allow_network,
            resolved: Mutex::new(BTreeMap::new()),
        };
        let mut spec = file
            .resolve(&base)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        spec.release_idle = Some(self.release_idle);
        spec.ingest = Some(self.ingest.clone());
        spec.dead_letter_budget = Some(self.meters(tenant).dead_letters.clone());
        let resolved = base.resolved.into_inner().unwrap();
        Ok((spec, resolved))
    }

    /// Checks `spec` against the tenant's quotas, counting its other
    /// pipelines but not an earlier version of this one.
    fn check_quotas(&self, tenant: &str, spec: &PipelineSpec) -> Result<(), ServiceError> {
        let quotas = self.quotas(tenant)?;
        let others: Vec<(String, PipelineRecord)> = self
            .catalog
            .pipelines(tenant)?
            .into_iter()
            .filter(|(n, _)| n != &spec.name)
            .collect();
        if others.len() as u32 + 1 > quotas.pipelines {
            return Err(ServiceError::Quota(format!(
                "quota `pipelines` of {} would be exceeded ({} exist)",
                quotas.pipelines,
                others.len()
            )));
        }
        let (mut stages, mut memory) = (spec.stages.len() as u64, 0u64);
        memory += spec.stages.iter().map(|s| s.spec.memory_limit).sum::<u64>();
        for (_, record) in &others {
            if let Ok(file) = PipelineFile::parse(Path::new("x.toml"), record.text.clone()) {
                stages += file.config.stages.len() as u64;
                memory += file
                    .config
                    .stages
                    .iter()
                    .map(|s| s.get_ref().memory_limit.get_ref().0)
                    .sum::<u64>();
            }
        }
        if stages > u64::from(quotas.stages) {
            return Err(ServiceError::Quota(format!(
                "quota `stages` of {} would be exceeded ({stages} over all pipelines)",
                quotas.stages
            )));
        }
        if memory > quotas.memory.0 {
            return Err(ServiceError::Quota(format!(
                "quota `memory` of {} would be exceeded (the stages' memory limits add up to {})",
                quotas.memory,
                ByteSize(memory)
            )));
        }
        let state = folder_bytes(&self.tenant_dir(tenant).join("state"));
        if state >= quotas.state_bytes.0 {
            return Err(ServiceError::Quota(format!(
                "quota `state_bytes` of {} is used up ({} of state)",
                quotas.state_bytes,
                ByteSize(state)
            )));
        }
        Ok(())
    }

    /// Creates or replaces tenant `tenant`'s pipeline `name` from `text`
    /// and starts it. Returns whether it was new.
    pub fn apply(&self, tenant: &str, name: &str, text: &str) -> Result<bool, ServiceError> {
        let (spec, pins) = self.resolve(tenant, name, text, &BTreeMap::new())?;
        let lock = self.changing(tenant);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_quotas(tenant, &spec)?;
        let uses_state = crate::pipeline::check_stages(&spec, &self.host)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        checks::check_folders(&spec, uses_state)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        crate::pipeline::build_sources(&spec)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let existed = self.catalog.pipeline(tenant, name)?.is_some();
        // The old version finishes its batches and checkpoints first; the
        // new one goes on from its checkpoint.
        self.supervisor.remove(&key(tenant, name));
        let record = PipelineRecord {
            text: text.to_string(),
            desired: Desired::Running,
            pins,
            updated_ms: crate::batch::now_ms(),
        };
        self.catalog.set_pipeline(tenant, name, Some(&record))?;
        self.start_spec(tenant, name, &spec);
        Ok(!existed)
    }

    /// Starts a pipeline from its stored record.
    pub(super) fn start_record(
        &self,
        tenant: &str,
        name: &str,
        record: &PipelineRecord,
    ) -> Result<(), ServiceError> {
        let (spec, _) = self.resolve(tenant, name, &record.text, &record.pins)?;
        self.start_spec(tenant, name, &spec);
        match self
            .start_errors
            .lock()
            .unwrap()
            .get(&(tenant.into(), name.into()))
        {
            Some(e) => Err(ServiceError::Internal(e.clone())),
            None => Ok(()),
        }
    }

    fn start_spec(&self, tenant: &str, name: &str, spec: &PipelineSpec) {
        let mut errors = self.start_errors.lock().unwrap();
        errors.remove(&(tenant.to_string(), name.to_string()));
        drop(errors);
        if let Err(e) = self.supervisor.start(spec) {
            tracing::error!(tenant = %tenant, pipeline = %name, "cannot start: {e}");
            self.start_errors
                .lock()
                .unwrap()
                .insert((tenant.to_string(), name.to_string()), e.to_string());
        }
    }

    fn record(&self, tenant: &str, name: &str) -> Result<PipelineRecord, ServiceError> {
        self.catalog
            .pipeline(tenant, name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no pipeline `{name}`")))
    }

    /// Stops a pipeline (its batches in flight finish and are
    /// checkpointed); it stays stopped across restarts.
    pub fn stop(&self, tenant: &str, name: &str) -> Result<(), ServiceError> {
        // Under the tenant's change lock, so a concurrent apply's record is
        // not overwritten with the old text.
        let lock = self.changing(tenant);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.record(tenant, name)?;
        record.desired = Desired::Stopped;
        self.catalog.set_pipeline(tenant, name, Some(&record))?;
        self.supervisor.remove(&key(tenant, name));
        Ok(())
    }

    /// Starts a stopped pipeline from its checkpoint.
    pub fn start(&self, tenant: &str, name: &str) -> Result<(), ServiceError> {
        let lock = self.changing(tenant);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.record(tenant, name)?;
        record.desired = Desired::Running;
        self.catalog.set_pipeline(tenant, name, Some(&record))?;
        if matches!(
            self.supervisor.state(&key(tenant, name)),
            Some(RunState::Running | RunState::Stopping)
        ) {
            return Ok(());
        }
        self.supervisor.remove(&key(tenant, name));
        self.start_record(tenant, name, &record)
    }

    /// Ends and forgets a pipeline, with its state and dead letters. The
    /// batches it holds are dropped, not processed (stop it first to have
    /// them finished).
    pub fn delete(&self, tenant: &str, name: &str) -> Result<(), ServiceError> {
        let lock = self.changing(tenant);
        let _change = lock.lock().unwrap_or_else(|p| p.into_inner());
        self.record(tenant, name)?;
        self.supervisor.discard(&[key(tenant, name)]);
        self.catalog.set_pipeline(tenant, name, None)?;
        self.start_errors
            .lock()
            .unwrap()
            .remove(&(tenant.to_string(), name.to_string()));
        let dir = self.tenant_dir(tenant);
        let _ = std::fs::remove_file(dir.join("state").join(format!("{name}.redb")));
        let _ = std::fs::remove_dir_all(dir.join("state").join(format!("{name}.wal")));
        let _ = std::fs::remove_dir_all(dir.join("dead-letter").join(name));
        Ok(())
    }

    /// A pipeline's status: state, stages with their versions, figures.
    pub fn status(&self, tenant: &str, name: &str) -> Result<serde_json::Value, ServiceError> {
        let record = self.record(tenant, name)?;
        Ok(self.status_of(tenant, name, &record))
    }

    /// Every pipeline of a tenant, with its status.
    pub fn statuses(&self, tenant: &str) -> Result<Vec<serde_json::Value>, ServiceError> {
        Ok(self
            .catalog
            .pipelines(tenant)?
            .iter()
            .map(|(name, record)| self.status_of(tenant, name, record))
            .collect())
    }

    fn status_of(&self, tenant: &str, name: &str, record: &PipelineRecord) -> serde_json::Value {
        let info = self.supervisor.pipeline(&key(tenant, name));
        let start_error = self
            .start_errors
            .lock()
            .unwrap()
            .get(&(tenant.to_string(), name.to_string()))
            .cloned();
        let (state, error) = match (&info, start_error) {
            (_, Some(e)) => ("failed", Some(e)),
            (Some(info), None) => match &info.state {
                RunState::Running | RunState::Stopping => ("running", None),
                RunState::Finished => ("stopped", None),
                RunState::Failed(e) => ("failed", Some(e.clone())),
            },
            (None, None) => ("stopped", None),
        };
        let stages: Vec<serde_json::Value> = match &info {
            Some(info) => info
                .stages
                .iter()
                .map(|e| {
                    let status = e.handle.status();
                    let current = e.handle.current();
                    serde_json::json!({
                        "name": e.settings.name,
                        "plugin": current.name.as_deref().map(|n| n.trim_end_matches(".wasm")),
                        "digest": format!("sha256:{}", current.hash),
                        "version": status.current.label,
                        "probation": status.probation,
                        "previous": status.previous.iter().map(|v| v.label.clone()).collect::<Vec<_>>(),
                        "events": status.events,
                    })
                })
                .collect(),
            None => record
                .pins
                .iter()
                .map(|(stage, digest)| serde_json::json!({ "name": stage, "digest": digest }))
                .collect(),
        };
        let metrics = info.as_ref().map(|i| {
            let t = i.metrics.totals();
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            let delays = |q: f64| {
                i.metrics
                    .delay_quantile(q)
                    .map(|[scheduling, total, latency]| {
                        serde_json::json!({
                            "scheduling_ms": ms(scheduling),
                            "total_ms": ms(total),
                            "latency_ms": ms(latency),
                        })
                    })
            };
            serde_json::json!({
                "batches": t.batches,
                "records_in": t.records_in,
                "records_out": t.records_out,
                "dead_letters": t.failed,
                "p50": delays(0.5),
                "p99": delays(0.99),
            })
        });
        serde_json::json!({
            "name": name,
            "state": state,
            "desired": record.desired,
            "error": error,
            "stages": stages,
            "tasks": info.as_ref().and_then(|i| i.tasks.as_ref()).map(|board| board.snapshot()),
            "metrics": metrics,
            "updated_ms": record.updated_ms,
        })
    }

    /// A new version of a stage's plugin (`name` or `name@sha256:…`), live
    /// at the next batch with the usual probation; returns its label.
    pub fn deploy(
        &self,
        tenant: &str,
        pipeline: &str,
        stage: &str,
        plugin: &str,
    ) -> Result<String, ServiceError> {
        let mut record = self.record(tenant, pipeline)?;
        let entry = self
            .supervisor
            .stage(&key(tenant, pipeline), stage)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no stage `{stage}` in running pipeline `{pipeline}`"
                ))
            })?;
        let (name, digest) = match plugin.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (plugin, None),
        };
        let (path, digest) = self
            .find_plugin(tenant, name, digest)
            .map_err(ServiceError::NotFound)?;
        let bytes =
            crate::plugin::read_plugin(&path).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let label = crate::reload::deploy(
            &self.host,
            &entry,
            Path::new(&format!("{name}.wasm")),
            &bytes,
            "deploy",
        )
        .map_err(ServiceError::BadRequest)?;
        record.pins.insert(stage.to_string(), digest);
        self.catalog.set_pipeline(tenant, pipeline, Some(&record))?;
        Ok(label)
    }

    /// The stage's previous version, live at the next batch.
    pub fn rollback(
        &self,
        tenant: &str,
        pipeline: &str,
        stage: &str,
    ) -> Result<String, ServiceError> {
        let mut record = self.record(tenant, pipeline)?;
        let entry = self
            .supervisor
            .stage(&key(tenant, pipeline), stage)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no stage `{stage}` in running pipeline `{pipeline}`"
                ))
            })?;
        let previous = entry.handle.previous();
        let label = crate::reload::rollback(&entry).map_err(ServiceError::Conflict)?;
        if let Some(previous) = previous {
            record
                .pins
                .insert(stage.to_string(), format!("sha256:{}", previous.hash));
            self.catalog.set_pipeline(tenant, pipeline, Some(&record))?;
        }
        Ok(label)
    }

    /// Feeds a pipeline's `http` source; `Ok(n)` records taken.
    pub fn ingest(
        &self,
        tenant: &str,
        pipeline: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Result<usize, IngestError>, ServiceError> {
        self.ingest_limit(tenant, pipeline)?;
        let point = self
            .ingest
            .get(&format!("{tenant}/{pipeline}"))
            .ok_or_else(|| {
                ServiceError::Unavailable(format!("pipeline `{pipeline}` is stopping"))
            })?;
        Ok(point.take(content_type, body))
    }

    /// Largest ingest body the pipeline's running `http` source takes:
    /// not found when the tenant has no such pipeline or it has no `http`
    /// source, unavailable when it is not running.
    ///
    /// A pipeline just started registers its source from the source's own
    /// task, a moment after the `PUT` or `start` that launched it answered:
    /// while the supervisor says it runs, this waits up to
    /// [`INGEST_READY_WAIT`] for the source rather than refusing a client
    /// that sent data right after starting it.
    pub fn ingest_limit(&self, tenant: &str, pipeline: &str) -> Result<usize, ServiceError> {
        let record = self.record(tenant, pipeline)?;
        let point_key = format!("{tenant}/{pipeline}");
        let waiting_since = std::time::Instant::now();
        loop {
            if let Some(point) = self.ingest.get(&point_key) {
                return Ok(point.max_body());
            }
            let running = matches!(
                self.supervisor.state(&key(tenant, pipeline)),
                Some(RunState::Running)
            );
            if !running || waiting_since.elapsed() >= INGEST_READY_WAIT {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let has_http = PipelineFile::parse(&file_name(pipeline), record.text)
            .map(|f| {
                f.config
                    .sources
                    .iter()
                    .any(|s| matches!(s.get_ref(), crate::source::SourceConfig::Http(_)))
            })
            .unwrap_or(false);
        if has_http {
            Err(ServiceError::Unavailable(format!(
                "pipeline `{pipeline}` is not running: start it to send it data"
            )))
        } else {
            Err(ServiceError::NotFound(format!(
                "pipeline `{pipeline}` has no `http` source"
            )))
        }
    }

    /// A pipeline's dead-lettered records, newest files last, at most
    /// `limit` records.
    pub fn dead_letters(
        &self,
        tenant: &str,
        pipeline: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, ServiceError> {
        self.record(tenant, pipeline)?;
        let dir = self.tenant_dir(tenant).join("dead-letter").join(pipeline);
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for stage in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let stage_name = stage.file_name().to_string_lossy().into_owned();
            for file in std::fs::read_dir(stage.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(".jsonl") && !name.starts_with('.') {
                    files.push((stage_name.clone(), file.path()));
                }
            }
        }
        files.sort_by(|a, b| a.1.file_name().cmp(&b.1.file_name()));
        let mut out = Vec::new();
        for (stage, path) in files.iter().rev() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines().rev() {
                if out.len() >= limit {
                    break;
                }
                if let Ok(mut record) = serde_json::from_str::<serde_json::Value>(line) {
                    record["stage"] = serde_json::Value::String(stage.clone());
                    out.push(record);
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Stops the pipelines that keep state of tenants whose state grew past
    /// their quota, naming it (run every few seconds).
    pub fn enforce_state_quotas(&self) {
        let Ok(tenants) = self.catalog.tenants() else {
            return;
        };
        for (tenant, record) in tenants {
            let used = folder_bytes(&self.tenant_dir(&tenant).join("state"));
            if used <= record.quotas.state_bytes.0 {
                continue;
            }
            let state = self.tenant_dir(&tenant).join("state");
            for info in self.supervisor.pipelines(Some(&tenant)) {
                // Pipelines that keep state are the ones that grow it.
                let keeps = state.join(format!("{}.redb", info.key.name)).exists();
                if keeps && matches!(info.state, RunState::Running) {
                    let reason = format!(
                        "stopped: quota `state_bytes` of {} exceeded ({} of state)",
                        record.quotas.state_bytes,
                        ByteSize(used)
                    );
                    tracing::warn!(tenant = %tenant, pipeline = %info.key.name, "{reason}");
                    self.supervisor.fail(&info.key, reason);
                }
            }
        }
    }
}

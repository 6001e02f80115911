//! The resolved pipeline: plain types, defaults applied once, every path
//! resolved against a [`Base`] — the pipeline file's folder for `sluice run`,
//! or a hosted tenant's files root, where a path may not leave the root and
//! a plugin is named from the tenant's stored ones. Builders work from this
//! form only; where a problem found later must point into the file, each
//! part keeps its [`Location`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{ConfigError, Delivery, PipelineFile, Tasks};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use crate::stage::StageSpec;

/// Where in its file a part of a pipeline was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// A part of a pipeline with where it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The part.
    pub value: T,
    /// Where its table starts.
    pub at: Location,
    /// Where what a source cannot make a record of, or a sink's server
    /// refuses, is dead-lettered: the pipeline's dead-letter folder, under
    /// `source-<index>` or `sink-<index>`.
    pub dead_letter: PathBuf,
}

/// A stage and where its `plugin` key was written.
#[derive(Debug, Clone)]
pub struct LocatedStage {
    /// The stage.
    pub spec: StageSpec,
    /// Where its table starts.
    pub at: Location,
    /// Where its `plugin` key's value is.
    pub plugin_at: Location,
}

/// A pipeline ready to build.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The pipeline's name.
    pub name: String,
    /// The tenant it belongs to, under `sluice serve`.
    pub tenant: Option<String>,
    /// The file it came from, as errors name it.
    pub file: PathBuf,
    /// Batch interval.
    pub interval: Duration,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Most key and value bytes in one batch.
    pub max_batch_bytes: usize,
    /// Ingest queue capacity, in chunks.
    pub queue_capacity: usize,
    /// The folder of the state file and write-ahead logs.
    pub state_dir: PathBuf,
    /// Whether `state_dir` was asked for (then the state file is kept even
    /// when nothing needs it).
    pub state_dir_set: bool,
    /// The delivery guarantee.
    pub delivery: Delivery,
    /// One chain of stages, or a task per partition (Kafka).
    pub tasks: Tasks,
    /// Whether a process keeps warm copies of the tasks it does not run
    /// (`standby_replicas = 1`).
    pub standby: bool,
    /// Sources, with their paths resolved.
    pub sources: Vec<Located<SourceConfig>>,
    /// Stages, in order.
    pub stages: Vec<LocatedStage>,
    /// Sinks, with their paths resolved.
    pub sinks: Vec<Located<SinkConfig>>,
    /// Drop a stage's instance after this long without records (set by
    /// `sluice serve`, not by the file): idle pipelines hold no Wasm memory.
    pub release_idle: Option<Duration>,
    /// Where `http` sources register to take data through the service's
    /// API (set by `sluice serve`).
    pub ingest: Option<crate::source::IngestPoints>,
    /// The bytes its dead letters may take, shared with the tenant's other
    /// pipelines (set by `sluice serve`).
    pub dead_letter_budget: Option<std::sync::Arc<crate::quota::ByteMeter>>,
}

impl PipelineSpec {
    /// An error located in the pipeline's file.
    pub fn error_at(&self, at: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.clone(),
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }

    /// Whether delivery is exactly-once.
    pub fn exactly_once(&self) -> bool {
        self.delivery == Delivery::ExactlyOnce
    }

    /// Whether it runs a task per Kafka partition.
    pub fn per_partition(&self) -> bool {
        self.tasks == Tasks::PerPartition
    }

    /// Whether the pipeline keeps a state file whatever its plugins do:
    /// `state_dir` is set, a source keeps its place only there, or the
    /// delivery is exactly-once (those checkpoint positions even in
    /// stateless pipelines), or a stage is windowed.
    pub fn needs_state_file(&self) -> bool {
        self.state_dir_set
            || self.exactly_once()
            || self
                .sources
                .iter()
                .any(|s| s.value.keeps_position_locally())
            || self.stages.iter().any(|s| s.spec.window.is_some())
    }

    /// The key its `http` sources register under with the service:
    /// `tenant/pipeline`.
    pub fn ingest_key(&self) -> String {
        format!("{}/{}", self.tenant.as_deref().unwrap_or(""), self.name)
    }

    /// The write-ahead log folder of source `index`.
    pub fn wal_dir(&self, index: usize) -> PathBuf {
        self.state_dir
            .join(format!("{}.wal", self.name))
            .join(format!("source-{index}"))
    }
}

/// What relative paths and plugin names in a pipeline mean.
pub trait Base {
    /// The tenant whose pipeline this is, if hosted.
    fn tenant(&self) -> Option<&str> {
        None
    }

    /// A data path (a `directory` source's or sink's folder).
    fn data_path(&self, written: &Path) -> Result<PathBuf, String>;

    /// The plugin stage `stage` names: its file, and the name its versions
    /// go by in logs and status (`None`: the file's name).
    fn plugin(&self, stage: &str, written: &Path) -> Result<(PathBuf, Option<String>), String>;

    /// Refuses a source the pipeline may not have here (what a hosted
    /// tenant may not reach), with the reason.
    fn check_source(&self, source: &SourceConfig) -> Result<(), String> {
        let _ = source;
        Ok(())
    }

    /// Refuses a sink the pipeline may not have here, with the reason.
    fn check_sink(&self, sink: &SinkConfig) -> Result<(), String> {
        let _ = sink;
        Ok(())
    }

    /// The state folder, from `state_dir` if written.
    fn state_dir(&self, written: Option<&Path>) -> Result<PathBuf, String>;

    /// A stage's dead-letter folder, from `dead_letter` if written.
    fn dead_letter(
        &self,
        pipeline: &str,
        stage: &str,
        written: Option<&Path>,
    ) -> Result<PathBuf, String>;
}

/// Paths relative to a pipeline file's folder: `sluice run`'s base.
pub struct FolderBase {
    dir: PathBuf,
}

impl FolderBase {
    /// The base of the file at `path`.
    pub fn of_file(path: &Path) -> Self {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FolderBase { dir }
    }

    /// `written` against the folder, without the `.` parts a user may
    /// write (`./out/` and `out` name one folder, and say so alike).
    fn join(&self, written: &Path) -> PathBuf {
        let tidy: PathBuf = written
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        if written.is_absolute() {
            tidy
        } else {
            self.dir.join(tidy)
        }
    }
}

impl Base for FolderBase {
    fn data_path(&self, written: &Path) -> Result<PathBuf, String> {
        Ok(self.join(written))
    }

    fn plugin(&self, _: &str, written: &Path) -> Result<(PathBuf, Option<String>), String> {
        Ok((self.join(written), None))
    }

    fn state_dir(&self, written: Option<&Path>) -> Result<PathBuf, String> {
        Ok(self.join(written.unwrap_or(Path::new("state"))))
    }

    fn dead_letter(
        &self,
        pipeline: &str,
        stage: &str,
        written: Option<&Path>,
    ) -> Result<PathBuf, String> {
        Ok(match written {
            Some(path) => self.join(path),
            None => self.dir.join("dead-letter").join(pipeline).join(stage),
        })
    }
}

impl PipelineFile {
    /// The resolved pipeline, with paths and plugins resolved by `base`.
    pub fn resolve(&self, base: &dyn Base) -> Result<PipelineSpec, ConfigError> {
        let c = &self.config;
        let at = |span: std::ops::Range<usize>| {
            let (line, column) = self.line_column(span);
            Location { line, column }
        };
        let name = c.name.get_ref().clone();
        let interval = c.batch_interval.get_ref().0;
        let state_dir = base
            .state_dir(c.state_dir.as_deref())
            .map_err(|m| self.error_at(0..0, format!("`state_dir`: {m}")))?;
        let mut sources = Vec::with_capacity(c.sources.len());
        for (index, source) in c.sources.iter().enumerate() {
            base.check_source(source.get_ref())
                .map_err(|m| self.error_at(source.span(), m))?;
            let mut value = source.get_ref().clone();
            value
                .resolve_paths(|p| base.data_path(p))
                .map_err(|m| self.error_at(source.span(), m))?;
            let dead_letter = base
                .dead_letter(&name, &format!("source-{index}"), None)
                .map_err(|m| self.error_at(source.span(), m))?;
            sources.push(Located {
                value,
                at: at(source.span()),
                dead_letter,
            });
        }
        let mut stages = Vec::with_capacity(c.stages.len());
        for stage in &c.stages {
            let s = stage.get_ref();
            let (plugin, label) = base
                .plugin(s.name.get_ref(), s.plugin.get_ref())
                .map_err(|m| self.error_at(s.plugin.span(), m))?;
            let dead_letter = base
                .dead_letter(&name, s.name.get_ref(), s.dead_letter.as_deref())
                .map_err(|m| self.error_at(stage.span(), format!("`dead_letter`: {m}")))?;
            let mut spec = s
                .spec(plugin, dead_letter, interval)
                .map_err(|(span, message)| {
                    // Defaults carry no span: point at the stage then.
                    let span = if span.is_empty() { stage.span() } else { span };
                    self.error_at(span, message)
                })?;
            spec.plugin_label = label;
            stages.push(LocatedStage {
                spec,
                at: at(stage.span()),
                plugin_at: at(s.plugin.span()),
            });
        }
        let mut sinks = Vec::with_capacity(c.sinks.len());
        for (index, sink) in c.sinks.iter().enumerate() {
            base.check_sink(sink.get_ref())
                .map_err(|m| self.error_at(sink.span(), m))?;
            let mut value = sink.get_ref().clone();
            value
                .resolve_paths(|p| base.data_path(p))
                .map_err(|m| self.error_at(sink.span(), m))?;
            value
                .resolve_dead_letter(|written| {
                    base.dead_letter(&name, &format!("sink-{index}"), written)
                })
                .map_err(|m| self.error_at(sink.span(), m))?;
            // The sink's own `dead_letter` folder when it has one, else the
            // pipeline's `sink-<index>`.
            let dead_letter = match value.dead_letter_dir() {
                Some(dir) => dir.to_path_buf(),
                None => base
                    .dead_letter(&name, &format!("sink-{index}"), None)
                    .map_err(|m| self.error_at(sink.span(), m))?,
            };
            sinks.push(Located {
                value,
                at: at(sink.span()),
                dead_letter,
            });
        }
        Ok(PipelineSpec {
            name,
            tenant: base.tenant().map(str::to_string),
            file: self.path.clone(),
            interval,
            max_batch_records: *c.max_batch_records.get_ref(),
            max_batch_bytes: c.max_batch_bytes.get_ref().0 as usize,
            queue_capacity: *c.queue_capacity.get_ref(),
            state_dir,
            state_dir_set: c.state_dir.is_some(),
            delivery: *c.delivery.get_ref(),
            tasks: *c.tasks.get_ref(),
            standby: *c.standby_replicas.get_ref() > 0,
            sources,
            stages,
            sinks,
            release_idle: None,
            ingest: None,
            dead_letter_budget: None,
        })
    }
}

//! Plugin versions of a stage, shared between the stage (which runs one
//! version per batch on its own thread) and whoever prepares new ones (the
//! file watcher, the control endpoint). A new version arrives as an
//! [`Update`]: compiled, instantiated and `init`-ed off the batch path, it
//! waits in a single slot and goes live at the next batch boundary; a newer
//! one offered meanwhile replaces it (and frees its instance).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::batch::now_ms;
use crate::plugin::{Instance, Plugin};

/// Most events kept per stage for `sluice status`.
const EVENTS: usize = 32;

/// Most earlier versions kept (compiled, ready) for rollback.
const HISTORY: usize = 8;

/// A prepared version, waiting for the next batch boundary.
pub struct Update {
    /// The new version.
    pub plugin: Arc<Plugin>,
    /// Its instance, already `init`-ed with the stage's config.
    pub instance: Instance,
    /// What asked for it: `file change`, `deploy`, `rollback`.
    pub cause: String,
}

/// One version as shown in `sluice status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    /// `file.wasm@hash`.
    pub label: String,
    /// Full content hash.
    pub hash: String,
    /// When it went live, ms since the epoch.
    pub since_ms: u64,
}

/// What a stage's versions look like right now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageStatus {
    /// The stage's name.
    pub stage: String,
    /// The live version.
    pub current: VersionInfo,
    /// Whether the live version is still on probation (a failure rolls it
    /// back).
    pub probation: bool,
    /// Earlier live versions, most recent last; `rollback` returns to the
    /// last one.
    pub previous: Vec<VersionInfo>,
    /// Recent events: versions going live, rejected, rolled back.
    pub events: Vec<String>,
}

struct Inner {
    current: (Arc<Plugin>, VersionInfo),
    previous: Vec<(Arc<Plugin>, VersionInfo)>,
    probation: bool,
    events: VecDeque<String>,
}

/// The shared side of a stage's versions.
pub struct StageHandle {
    name: String,
    inner: Mutex<Inner>,
    pending: Mutex<Option<Update>>,
}

impl StageHandle {
    /// A handle whose live version is `plugin`.
    pub fn new(name: &str, plugin: Arc<Plugin>) -> Arc<Self> {
        let info = info(&plugin);
        let handle = StageHandle {
            name: name.to_string(),
            inner: Mutex::new(Inner {
                current: (plugin, info),
                previous: Vec::new(),
                probation: false,
                events: VecDeque::new(),
            }),
            pending: Mutex::new(None),
        };
        Arc::new(handle)
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live version.
    pub fn current(&self) -> Arc<Plugin> {
        self.inner.lock().unwrap().current.0.clone()
    }

    /// The version before the live one, if any.
    pub fn previous(&self) -> Option<Arc<Plugin>> {
        self.inner
            .lock()
            .unwrap()
            .previous
            .last()
            .map(|p| p.0.clone())
    }

    /// Puts a prepared version in the slot for the next batch boundary,
    /// replacing (and freeing) one still waiting there.
    pub fn offer(&self, update: Update) {
        let label = update.plugin.label();
        self.event(format!(
            "{label} prepared ({}); live at the next batch",
            update.cause
        ));
        let replaced = self.pending.lock().unwrap().replace(update);
        if let Some(old) = replaced {
            self.event(format!(
                "{} superseded before going live",
                old.plugin.label()
            ));
        }
    }

    /// Takes the version waiting for the next batch boundary, if any.
    pub(super) fn take_pending(&self) -> Option<Update> {
        self.pending.lock().unwrap().take()
    }

    /// The hash of the version the stage will run next: the one waiting, or
    /// else the live one.
    pub fn next_hash(&self) -> String {
        if let Some(update) = &*self.pending.lock().unwrap() {
            return update.plugin.hash.clone();
        }
        self.current().hash.clone()
    }

    /// Records an event for `sluice status` and logs nothing itself.
    pub fn event(&self, text: String) {
        let mut inner = self.inner.lock().unwrap();
        if inner.events.len() == EVENTS {
            inner.events.pop_front();
        }
        inner
            .events
            .push_back(format!("{} {text}", crate::telemetry::clock_time(now_ms())));
    }

    /// A new version went live (the stage calls this).
    pub(super) fn went_live(&self, plugin: &Arc<Plugin>, probation: bool, rollback: bool) {
        let mut inner = self.inner.lock().unwrap();
        let old = std::mem::replace(&mut inner.current, (plugin.clone(), info(plugin)));
        if rollback {
            // Returning to an earlier version: drop it from the history.
            if let Some(i) = inner.previous.iter().rposition(|p| p.0.hash == plugin.hash) {
                inner.previous.remove(i);
            }
        } else {
            inner.previous.push(old);
            if inner.previous.len() > HISTORY {
                inner.previous.remove(0);
            }
        }
        inner.probation = probation;
    }

    /// The live version passed probation (the stage calls this).
    pub(super) fn passed_probation(&self) {
        self.inner.lock().unwrap().probation = false;
    }

    /// A snapshot for `sluice status`.
    pub fn status(&self) -> StageStatus {
        let inner = self.inner.lock().unwrap();
        StageStatus {
            stage: self.name.clone(),
            current: inner.current.1.clone(),
            probation: inner.probation,
            previous: inner.previous.iter().map(|p| p.1.clone()).collect(),
            events: inner.events.iter().cloned().collect(),
        }
    }
}

fn info(plugin: &Plugin) -> VersionInfo {
    VersionInfo {
        label: plugin.label(),
        hash: plugin.hash.clone(),
        since_ms: now_ms(),
    }
}

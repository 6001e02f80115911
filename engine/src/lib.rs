//! Sluice: a micro-batch stream engine whose processing stages are
//! WebAssembly components.
//!
//! Records flow from sources through a bounded ingest queue into batches cut
//! every `batch_interval`; each batch goes through the pipeline's stages (one
//! sandboxed Wasm instance each) and then to its sinks. See `DESIGN.md` in
//! the shared docs and the README for the picture; each module's own docs
//! say what it owns.

pub mod batch;
pub mod config;
pub mod confine;
pub mod connector;
pub mod control;
pub mod dashboard;
pub mod delivery;
pub mod failpoint;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
pub mod pipeline;
pub mod plugin;
pub mod quota;
pub mod reload;
pub mod service;
pub mod sink;
pub mod source;
pub mod stage;
pub mod state;
pub mod supervisor;
pub mod tasks;
pub mod telemetry;
pub mod units;

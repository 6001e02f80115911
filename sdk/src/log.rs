//! Writing to the engine's log, which tags each line with the pipeline, the
//! stage and the plugin, and applies its level filter.
//!
//! Each call crosses the boundary even when the level is filtered out: log
//! per batch or on rare events, never per record.
//!
//! ```
//! sluice_sdk::log::info("loaded 12 rules");
//! ```
//!
//! Outside Wasm (in a plugin's unit tests) the lines go to stderr instead.

#[cfg(target_family = "wasm")]
use crate::bindings::sluice::plugin::log::{Level, log};

#[cfg(not(target_family = "wasm"))]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(not(target_family = "wasm"))]
fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    eprintln!("{level} {message}");
}

/// Logs `message` at level `trace`: detail for following the code.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs `message` at level `debug`: detail for diagnosing a problem.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs `message` at level `info`: something an operator wants to know.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs `message` at level `warn`: something looks wrong but the stage goes
/// on.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs `message` at level `error`: something failed.
pub fn error(message: &str) {
    log(Level::Error, message);
}

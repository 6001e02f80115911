//! End-to-end tests: each drives the real `sluice` binary (built with
//! `cargo build --release --bin sluice`) over real files, pipes and sockets,
//! with the real plugins built by this package's build step, and checks the
//! output against results computed independently here.

mod support;

mod backpressure;
mod compile_cache;
mod config_errors;
mod connectors;
mod containment;
mod elasticsearch;
mod example_plugins;
mod hardening;
mod hot_reload;
mod http_sink;
mod http_source;
mod kafka;
mod languages;
mod object_store;
mod observe;
mod plugin_files;
mod plugin_projects;
mod sandbox;
mod serve;
mod shutdown;
mod state;
mod windows;
mod wordcount;

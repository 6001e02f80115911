//! The `sluice` command's subcommands: running and checking pipelines
//! (`run`), talking to a running engine (`control`) and working on plugins
//! (`plugin`); `main.rs` keeps the command line.

pub mod control;
pub mod plugin;
pub mod run;

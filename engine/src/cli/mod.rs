//! The `sluice` command's subcommands: running and checking pipelines
//! (`run`), talking to a running engine (`control`), working on plugins
//! (`plugin`), the multi-tenant service (`serve`) and the commands that
//! talk to it (`service`); `main.rs` keeps the command line.

pub mod control;
pub mod plugin;
pub mod run;
pub mod serve;
pub mod service;

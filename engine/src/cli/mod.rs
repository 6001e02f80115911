//! The `sluice` command's subcommands that talk to a running engine or work
//! on plugins; `main.rs` keeps the command line, `run` and `check`.

pub mod control;
pub mod plugin;

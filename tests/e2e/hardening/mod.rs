//! What a hostile probe of `sluice run` found, each with a test that failed
//! before its fix: an idle folder that kept a core busy, a clean restart
//! that repeated output, file names that are not UTF-8, links out of a
//! source's folder, unbounded plugin reads, what `check` passed and `run`
//! rejected, an open control endpoint, and crash points that no test hit.

mod checks;
mod control;
mod directory;
mod failpoints;

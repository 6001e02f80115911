//! `uppercase`: maps each record's value to upper case (UTF-8), keeping its
//! key and timestamp. With `lowercase`, the smallest pair of
//! versions to swap while a pipeline runs: every output record shows which
//! version made it.
//!
//! Config: none required; any keys are accepted and ignored, so the two
//! versions can replace each other under one stage config. A value that is
//! not UTF-8 fails that record alone.

use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct Uppercase;

impl Processor for Uppercase {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Uppercase)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for rec in batch.records() {
            match rec.value_str() {
                Ok(text) => out.emit(text.to_uppercase(), rec.key(), rec.timestamp()),
                Err(e) => out.fail(rec.index(), e.to_string()),
            }
        }
        Ok(())
    }
}

sluice_sdk::export!(Uppercase);

//! `{{name}}`: a Sluice stage. Each record's value with the config's
//! `suffix` (default `!`) appended, keeping its key and timestamp; a value
//! that is not UTF-8 goes to the dead letters on its own.

use sluice_sdk::{Batch, Config, Error, Output, Processor};

struct Stage {
    suffix: String,
}

impl Processor for Stage {
    fn init(config: &Config) -> Result<Self, Error> {
        // First, so that a typo in a key is an error, not a default.
        config.allow_only(&["suffix"])?;
        Ok(Stage {
            suffix: config.get_or("suffix", "!").to_owned(),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), Error> {
        for rec in batch.records() {
            match rec.value_str() {
                Ok(text) => out.emit(format!("{text}{}", self.suffix), rec.key(), rec.timestamp()),
                Err(e) => out.fail(rec.index(), e.to_string()),
            }
        }
        Ok(())
    }
}

sluice_sdk::export!(Stage);

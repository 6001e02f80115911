//! Any text as a pipeline file: parsed (with its file:line:column errors)
//! or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = sluice::config::PipelineFile::parse(std::path::Path::new("fuzz.toml"), text.to_string()) {
        // Building the message walks the spans: it must not panic either.
        let _ = e.to_string();
    }
});

//! `sluice plugin test`: one plugin over a list of records, outside any
//! pipeline but in the same sandbox and limits, reporting what it emits and
//! which records it rejected. The command line and printing stay in
//! `main.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{CallInfo, Grants, Instance, Limits, LogTag, PluginHost, StateView};
use crate::batch::Records;
use crate::sink::{Format, format};

/// What a plugin did with the records.
#[derive(Debug, Default)]
pub struct TestReport {
    /// Its output, formatted.
    pub output: Vec<u8>,
    /// One line per rejected record or failed batch, for a human.
    pub failures: Vec<String>,
}

/// Loads `file`, runs `init` with `config`, then `process` over `records`
/// in batches of `batch`. An error means the plugin could not be loaded or
/// initialised.
pub fn test_plugin(
    host: &PluginHost,
    file: &Path,
    config: &[(String, String)],
    records: &Records,
    batch: usize,
    format: Format,
) -> Result<TestReport, String> {
    let plugin = host.load(file).map_err(|e| e.to_string())?;
    let tag = Arc::new(LogTag {
        pipeline: "test".into(),
        stage: "plugin".into(),
        plugin: plugin.label(),
    });
    let limits = Limits {
        memory: 256 << 20,
        time: Duration::from_secs(10),
    };
    // State lives in the instance: for the length of the test, or until a
    // trap ends the instance and a new one takes the next batch (as in a
    // pipeline, but there the state is the engine's and survives).
    let start_instance = || {
        let state = StateView::new(None, 1 << 20);
        Instance::new(
            &plugin,
            tag.clone(),
            limits,
            Grants::default(),
            config,
            state,
        )
        .map_err(|e| format!("plugin {} {e}", plugin.label()))
    };
    let mut instance = start_instance()?;
    let mut report = TestReport::default();
    let total = records.len();
    let mut start = 0;
    let mut id = 0;
    // Like the engine, empty batches are never sent.
    while start < total {
        let end = (start + batch.max(1)).min(total);
        let mut chunk = Records::default();
        for i in start..end {
            chunk.push_record(records.get(i));
        }
        let info = CallInfo {
            id,
            time_ms: crate::batch::now_ms(),
            interval_ms: 1000,
        };
        let (back, outcome) = instance.process(info, chunk);
        match outcome {
            Ok(output) => {
                for record in output.records.iter() {
                    format::write(&mut report.output, format, record);
                }
                for (index, message) in &output.failures {
                    let index = *index as usize;
                    // The index comes from the plugin: never trust it.
                    let value = if index < back.len() {
                        back.get(index).value()
                    } else {
                        b"?"
                    };
                    report.failures.push(format!(
                        "line {}: failed: {message} (value {:?})",
                        start + index + 1,
                        String::from_utf8_lossy(value)
                    ));
                }
            }
            Err(e) => {
                let mut line = format!("lines {}-{end}: plugin {} {e}", start + 1, plugin.label());
                if e.kills_instance() && end < total {
                    match start_instance() {
                        Ok(fresh) => {
                            line += " (a new instance, with empty state, takes the next batch)";
                            instance = fresh;
                        }
                        Err(e) => {
                            report.failures.push(line);
                            report
                                .failures
                                .push(format!("lines {}-{total}: not run: {e}", end + 1));
                            break;
                        }
                    }
                }
                report.failures.push(line);
            }
        }
        id += 1;
        start = end;
    }
    Ok(report)
}

//! The Prometheus text exposition format (version 0.0.4) of a set of
//! pipelines' series, written by hand: the series already live in each
//! pipeline's [`PipelineMetrics`], and a hosted tenant must see only its
//! own, so the caller picks the pipelines and this writes them — every
//! family's `# HELP` and `# TYPE` once, then its samples across pipelines,
//! as the format asks. `promtool check metrics` passes on the output (an
//! end-to-end test runs it).

use std::fmt::Write as _;

use super::pipeline::PipelineMetrics;
use super::process;
use super::series::{BOUNDS, CallOutcome, HistogramSnapshot, Labels, ReloadOutcome};

/// The content type of the output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A pipeline to expose, and whether it is running.
pub struct Exposed<'a> {
    /// Its series.
    pub metrics: &'a PipelineMetrics,
    /// Whether it is running (`sluice_pipeline_up`).
    pub up: bool,
}

/// Writes label values escaped as the format asks (`\\`, `\"`, `\n`).
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample's label set: the pipeline's, then `extra`.
fn labels(out: &mut String, base: &Labels, extra: &[(&str, &str)]) {
    out.push('{');
    let mut first = true;
    let mut pair = |out: &mut String, k: &str, v: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    };
    if let Some(tenant) = &base.tenant {
        pair(out, "tenant", tenant);
    }
    pair(out, "pipeline", &base.pipeline);
    for (k, v) in extra {
        pair(out, k, v);
    }
    out.push('}');
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(
    out: &mut String,
    name: &str,
    base: &Labels,
    extra: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    labels(out, base, extra);
    let _ = writeln!(out, " {value}");
}

/// One sample per task of a pipeline with `tasks = "per-partition"` for
/// which `value` gives one, labelled with the task, its topic and partition
/// and `extra`'s label.
fn per_task<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    p: &Exposed<'_>,
    value: impl Fn(&crate::tasks::TaskStatus) -> Option<(Option<(&'static str, &'static str)>, V)>,
) {
    let Some(board) = p.metrics.tasks.get() else {
        return;
    };
    for t in board.snapshot() {
        let Some((extra, v)) = value(&t) else {
            continue;
        };
        let partition = t.partition.to_string();
        let mut labels = vec![
            ("task", t.task.as_str()),
            ("topic", t.topic.as_str()),
            ("partition", partition.as_str()),
        ];
        labels.extend(extra);
        sample(out, name, &p.metrics.labels, &labels, v);
    }
}

/// A number as the format writes it (`f64`'s shortest form; never NaN
/// here).
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, name: &str, base: &Labels, h: &HistogramSnapshot) {
    let mut cumulative = 0;
    for (i, bound) in BOUNDS.iter().enumerate() {
        cumulative += h.counts[i];
        let le = num(*bound);
        sample(
            out,
            &format!("{name}_bucket"),
            base,
            &[("le", &le)],
            cumulative,
        );
    }
    cumulative += h.counts[BOUNDS.len()];
    sample(
        out,
        &format!("{name}_bucket"),
        base,
        &[("le", "+Inf")],
        cumulative,
    );
    sample(out, &format!("{name}_sum"), base, &[], num(h.sum));
    sample(out, &format!("{name}_count"), base, &[], cumulative);
}

type PerPipeline = fn(&mut String, &str, &Exposed<'_>);

/// Every per-pipeline family: name, type, help, and how to write its
/// samples for one pipeline.
const FAMILIES: &[(&str, &str, &str, PerPipeline)] = &[
    (
        "sluice_pipeline_up",
        "gauge",
        "1 while the pipeline runs, 0 once it has stopped or failed.",
        |o, n, p| sample(o, n, &p.metrics.labels, &[], u8::from(p.up)),
    ),
    (
        "sluice_batch_interval_seconds",
        "gauge",
        "The pipeline's batch interval.",
        |o, n, p| {
            sample(
                o,
                n,
                &p.metrics.labels,
                &[],
                num(p.metrics.interval.as_secs_f64()),
            )
        },
    ),
    (
        "sluice_batches_total",
        "counter",
        "Batches processed, with records or not.",
        |o, n, p| sample(o, n, &p.metrics.labels, &[], p.metrics.batches.get()),
    ),
    (
        "sluice_batch_processing_seconds",
        "histogram",
        "Processing time of batches with records: from the first stage taking the batch until every sink took its output.",
        |o, n, p| histogram(o, n, &p.metrics.labels, &p.metrics.processing.snapshot()),
    ),
    (
        "sluice_batch_scheduling_delay_seconds",
        "histogram",
        "Scheduling delay of batches with records: from the end of the batch's interval to the start of its processing.",
        |o, n, p| histogram(o, n, &p.metrics.labels, &p.metrics.scheduling.snapshot()),
    ),
    (
        "sluice_batch_total_delay_seconds",
        "histogram",
        "Total delay of batches with records: scheduling delay plus processing time.",
        |o, n, p| histogram(o, n, &p.metrics.labels, &p.metrics.total_delay.snapshot()),
    ),
    (
        "sluice_record_latency_seconds",
        "histogram",
        "Per batch with records, from the receipt of its oldest record to the end of its processing (the batch's slowest record).",
        |o, n, p| histogram(o, n, &p.metrics.labels, &p.metrics.latency.snapshot()),
    ),
    (
        "sluice_source_records_total",
        "counter",
        "Records a source handed to the pipeline.",
        |o, n, p| {
            for s in &p.metrics.sources {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("source", &s.name)],
                    s.records.get(),
                );
            }
        },
    ),
    (
        "sluice_kafka_consumer_lag",
        "gauge",
        "Messages between the group's committed offset and the end of a partition the source reads, as of the consumer's last statistics (every second).",
        |o, n, p| {
            for s in &p.metrics.sources {
                for ((topic, partition), lag) in s.lag() {
                    let partition = partition.to_string();
                    sample(
                        o,
                        n,
                        &p.metrics.labels,
                        &[
                            ("source", &s.name),
                            ("topic", &topic),
                            ("partition", &partition),
                        ],
                        lag,
                    );
                }
            }
        },
    ),
    (
        "sluice_task_phase",
        "gauge",
        "1 for each task of this process (tasks = per-partition) in its phase: starting, restoring, running, stopping, or standby (a warm copy of a task run elsewhere).",
        |o, n, p| per_task(o, n, p, |t| Some((Some(("phase", t.phase.name())), 1))),
    ),
    (
        "sluice_task_lag",
        "gauge",
        "Messages of a running task's partition not yet processed, from the consumer's statistics every second.",
        |o, n, p| per_task(o, n, p, |t| t.lag.map(|lag| (None, lag))),
    ),
    (
        "sluice_task_restored_records",
        "gauge",
        "Records a restoring task has applied from its changelog so far, or a standby since it started.",
        |o, n, p| per_task(o, n, p, |t| t.restore.as_ref().map(|r| (None, r.records))),
    ),
    (
        "sluice_queue_depth",
        "gauge",
        "Chunks of records waiting in the ingest queue as the last batch was cut; near sluice_queue_capacity the sources are held back (backpressure).",
        |o, n, p| sample(o, n, &p.metrics.labels, &[], p.metrics.queue_depth.get()),
    ),
    (
        "sluice_queue_capacity",
        "gauge",
        "Chunks the ingest queue holds before the sources wait.",
        |o, n, p| sample(o, n, &p.metrics.labels, &[], p.metrics.queue_capacity),
    ),
    (
        "sluice_records_in_total",
        "counter",
        "Records into a stage.",
        |o, n, p| {
            for s in &p.metrics.stages {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name)],
                    s.records_in.get(),
                );
            }
        },
    ),
    (
        "sluice_records_out_total",
        "counter",
        "Records out of a stage.",
        |o, n, p| {
            for s in &p.metrics.stages {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name)],
                    s.records_out.get(),
                );
            }
        },
    ),
    (
        "sluice_dead_letters_total",
        "counter",
        "Records a stage wrote to its dead-letter folder.",
        |o, n, p| {
            for s in &p.metrics.stages {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name)],
                    s.dead_letters.get(),
                );
            }
        },
    ),
    (
        "sluice_plugin_calls_total",
        "counter",
        "Calls into a stage's plugin (instantiation included), by outcome: ok, trap, timeout, out_of_memory, failed.",
        |o, n, p| {
            for s in &p.metrics.stages {
                for (i, outcome) in CallOutcome::ALL.iter().enumerate() {
                    sample(
                        o,
                        n,
                        &p.metrics.labels,
                        &[("stage", &s.name), ("outcome", outcome.as_str())],
                        s.calls[i].get(),
                    );
                }
            }
        },
    ),
    (
        "sluice_plugin_reloads_total",
        "counter",
        "New plugin versions of a stage, by outcome: live, rejected, rolled_back.",
        |o, n, p| {
            for s in &p.metrics.stages {
                for (i, outcome) in ReloadOutcome::ALL.iter().enumerate() {
                    sample(
                        o,
                        n,
                        &p.metrics.labels,
                        &[("stage", &s.name), ("outcome", outcome.as_str())],
                        s.reloads[i].get(),
                    );
                }
            }
        },
    ),
    (
        "sluice_plugin_info",
        "gauge",
        "1 for each stage's live plugin version.",
        |o, n, p| {
            for s in &p.metrics.stages {
                let version = s.version();
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name), ("version", &version)],
                    1,
                );
            }
        },
    ),
    (
        "sluice_plugin_memory_bytes",
        "gauge",
        "Linear memory of a stage's live instance (0 while it holds none).",
        |o, n, p| {
            for s in &p.metrics.stages {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name)],
                    s.memory.get(),
                );
            }
        },
    ),
    (
        "sluice_stage_busy_seconds_total",
        "counter",
        "Time a stage spent in its plugin.",
        |o, n, p| {
            for s in &p.metrics.stages {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name)],
                    num(s.busy_ns.get() as f64 / 1e9),
                );
            }
        },
    ),
    (
        "sluice_stage_backpressure_seconds_total",
        "counter",
        "Time a stage held a processed batch because the next stage (or the sinks) had no room for it.",
        |o, n, p| {
            for s in &p.metrics.stages {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("stage", &s.name)],
                    num(s.blocked_ns.get() as f64 / 1e9),
                );
            }
        },
    ),
    (
        "sluice_sink_records_total",
        "counter",
        "Records a sink took.",
        |o, n, p| {
            for s in &p.metrics.sinks {
                sample(
                    o,
                    n,
                    &p.metrics.labels,
                    &[("sink", &s.name)],
                    s.records.get(),
                );
            }
        },
    ),
    (
        "sluice_checkpoints_total",
        "counter",
        "Checkpoints (stage state and source positions) written.",
        |o, n, p| sample(o, n, &p.metrics.labels, &[], p.metrics.checkpoints.get()),
    ),
    (
        "sluice_last_checkpoint_timestamp_seconds",
        "gauge",
        "When the last checkpoint of this run was written (Unix time; absent before the first).",
        |o, n, p| {
            if let Some(c) = p.metrics.last_checkpoint() {
                sample(o, n, &p.metrics.labels, &[], num(c.time_ms as f64 / 1000.0));
            }
        },
    ),
    (
        "sluice_state_bytes",
        "gauge",
        "Size of the pipeline's state file (absent without one).",
        |o, n, p| {
            if let Some(bytes) = p.metrics.state_bytes() {
                sample(o, n, &p.metrics.labels, &[], bytes);
            }
        },
    ),
];

/// The exposition of `pipelines`, with the process's own figures (CPU,
/// memory, start time) when `process` is set.
pub fn render(pipelines: &[Exposed<'_>], process: bool) -> String {
    let mut out = String::with_capacity(4096 + pipelines.len() * 6144);
    for (name, kind, help, write) in FAMILIES {
        // A family without samples says nothing (a tenant without
        // pipelines gets an empty page).
        let mark = out.len();
        header(&mut out, name, kind, help);
        let samples = out.len();
        for p in pipelines {
            write(&mut out, name, p);
        }
        if out.len() == samples {
            out.truncate(mark);
        }
    }
    if process {
        process::write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::Shape;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        let base = Labels {
            tenant: Some("a\"b".into()),
            pipeline: "x\\y\nz".into(),
        };
        labels(&mut out, &base, &[("stage", "s")]);
        assert_eq!(out, r#"{tenant="a\"b",pipeline="x\\y\nz",stage="s"}"#);
    }

    #[test]
    fn each_family_is_written_once_with_every_pipelines_samples() {
        let shape = |name: &str| Shape {
            labels: Labels {
                tenant: None,
                pipeline: name.into(),
            },
            interval: Duration::from_millis(250),
            stages: vec!["count".into()],
            sources: vec!["generator-0".into()],
            sinks: vec!["null-0".into()],
            queue_capacity: 16,
        };
        let (a, b) = (
            PipelineMetrics::new(shape("a")),
            PipelineMetrics::new(shape("b")),
        );
        a.stages[0].records_in.add(3);
        a.processing.observe(Duration::from_millis(20));
        let text = render(
            &[
                Exposed {
                    metrics: &a,
                    up: true,
                },
                Exposed {
                    metrics: &b,
                    up: false,
                },
            ],
            false,
        );
        assert_eq!(
            text.matches("# TYPE sluice_records_in_total counter")
                .count(),
            1
        );
        assert!(
            text.contains("sluice_records_in_total{pipeline=\"a\",stage=\"count\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("sluice_records_in_total{pipeline=\"b\",stage=\"count\"} 0\n"));
        assert!(text.contains("sluice_batch_interval_seconds{pipeline=\"a\"} 0.25\n"));
        assert!(text.contains("sluice_pipeline_up{pipeline=\"b\"} 0\n"));
        // Cumulative buckets: 20 ms is above 10 ms and within 25 ms.
        assert!(
            text.contains("sluice_batch_processing_seconds_bucket{pipeline=\"a\",le=\"0.01\"} 0\n")
        );
        assert!(
            text.contains(
                "sluice_batch_processing_seconds_bucket{pipeline=\"a\",le=\"0.025\"} 1\n"
            )
        );
        assert!(
            text.contains("sluice_batch_processing_seconds_bucket{pipeline=\"a\",le=\"+Inf\"} 1\n")
        );
        assert!(text.contains("sluice_batch_processing_seconds_count{pipeline=\"a\"} 1\n"));
        // No checkpoint yet: that family has no samples and no header.
        assert!(!text.contains("sluice_last_checkpoint_timestamp_seconds"));
        assert!(!text.contains("process_cpu_seconds_total"));
    }
}

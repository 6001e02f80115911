//! What the dashboard page asks for, as JSON: the list of pipelines (a page
//! of them, filtered and sorted on the server, with aggregates over all,
//! so a thousand pipelines cost the browser fifty rows) and one pipeline's
//! detail (its timeline buckets, histograms of its recent batches, the
//! batch table with each batch's stages, the stage chain's load, versions,
//! problems, sources with Kafka lag, sinks, checkpoints). Everything is
//! summed up here from the pipeline's telemetry; the page only draws.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::batch::now_ms;
use crate::supervisor::{PipelineInfo, RunState, Supervisor};
use crate::telemetry::BatchMetrics;
use crate::telemetry::series::{CallOutcome, ReloadOutcome};

/// Whose pipelines a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every pipeline (`sluice run`, or the service's admin).
    All,
    /// One tenant's.
    Tenant(String),
}

impl Scope {
    /// The pipelines in scope.
    pub fn pipelines(&self, supervisor: &Supervisor) -> Vec<PipelineInfo> {
        match self {
            Scope::All => supervisor.all(),
            Scope::Tenant(t) => supervisor.pipelines(Some(t)),
        }
    }
}

/// The window the list's figures and the chain's load are taken over.
const RECENT_MS: u64 = 10_000;

/// Rows in the batch table.
const BATCH_ROWS: usize = 30;

/// Most list rows per answer.
const MAX_ROWS: usize = 200;

/// `GET …/pipelines` query.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only pipelines whose `tenant/name` contains this.
    pub q: Option<String>,
    /// `name` (default), `rate`, `delay` or `problems`.
    pub sort: Option<String>,
    /// Rows to skip.
    pub offset: Option<usize>,
    /// Rows to return (default 50, at most 200).
    pub limit: Option<usize>,
}

fn state_name(state: &RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Stopping => "stopping",
        RunState::Finished => "finished",
        RunState::Failed(_) => "failed",
    }
}

/// One list row's figures.
struct Row {
    tenant: Option<String>,
    name: String,
    state: &'static str,
    interval_ms: u64,
    rate: f64,
    last_total_ms: Option<f64>,
    processing_avg_ms: Option<f64>,
    records_in: u64,
    records_out: u64,
    dead_letters: u64,
    problems: usize,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(info: &PipelineInfo, now: u64) -> Row {
    let m = &info.metrics;
    let view = m.view();
    let since = now.saturating_sub(RECENT_MS);
    let (mut records, mut covered, mut busy, mut processing) = (0, 0, 0, 0);
    for b in view.timeline.buckets() {
        if b.start_ms >= since {
            records += b.records_in;
            covered += view.timeline.covered_ms(b);
            busy += b.busy_batches;
            processing += b.processing.0;
        }
    }
    let last = view.recent.back().filter(|b| b.time_ms + RECENT_MS > now);
    Row {
        tenant: info.key.tenant.clone(),
        name: info.key.name.clone(),
        state: state_name(&info.state),
        interval_ms: m.interval.as_millis() as u64,
        rate: if covered > 0 {
            records as f64 * 1000.0 / covered as f64
        } else {
            0.0
        },
        last_total_ms: last.map(|b| b.total_delay.as_secs_f64() * 1000.0),
        processing_avg_ms: (busy > 0).then(|| ms(processing / busy)),
        records_in: view.totals.records_in,
        records_out: view.totals.records_out,
        dead_letters: view.totals.failed,
        problems: m.journal.problem_count(),
    }
}

/// The list of pipelines in scope.
pub fn list(pipelines: &[PipelineInfo], query: &ListQuery) -> Value {
    let now = now_ms();
    let mut rows: Vec<Row> = pipelines.iter().map(|p| row(p, now)).collect();
    let (running, failed) = (
        rows.iter().filter(|r| r.state == "running").count(),
        rows.iter().filter(|r| r.state == "failed").count(),
    );
    let behind = rows
        .iter()
        .filter(|r| r.last_total_ms.is_some_and(|t| t > r.interval_ms as f64))
        .count();
    let rate: f64 = rows.iter().map(|r| r.rate).sum();
    let total = rows.len();
    if let Some(q) = query.q.as_deref().filter(|q| !q.is_empty()) {
        let q = q.to_lowercase();
        rows.retain(|r| {
            let full = format!("{}/{}", r.tenant.as_deref().unwrap_or(""), r.name);
            full.to_lowercase().contains(&q)
        });
    }
    let by_name = |a: &Row, b: &Row| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name));
    match query.sort.as_deref() {
        Some("rate") => rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(by_name(a, b))),
        Some("delay") => rows.sort_by(|a, b| {
            let d = |r: &Row| r.last_total_ms.unwrap_or(-1.0);
            d(b).total_cmp(&d(a)).then(by_name(a, b))
        }),
        Some("problems") => rows.sort_by(|a, b| b.problems.cmp(&a.problems).then(by_name(a, b))),
        _ => rows.sort_by(by_name),
    }
    let matching = rows.len();
    let offset = query.offset.unwrap_or(0).min(matching);
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_ROWS);
    let page: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            json!({
                "tenant": r.tenant,
                "name": r.name,
                "state": r.state,
                "interval_ms": r.interval_ms,
                "input_rate": r.rate,
                "last_total_delay_ms": r.last_total_ms,
                "processing_avg_ms": r.processing_avg_ms,
                "records_in": r.records_in,
                "records_out": r.records_out,
                "dead_letters": r.dead_letters,
                "problems": r.problems,
            })
        })
        .collect();
    json!({
        "now_ms": now,
        "total": total,
        "running": running,
        "failed": failed,
        "behind": behind,
        "input_rate": rate,
        "matching": matching,
        "offset": offset,
        "limit": limit,
        "pipelines": page,
    })
}

/// Ten equal-width bins from the smallest of `values` to the largest.
fn bins(values: &[f64]) -> Value {
    const BINS: usize = 10;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    let min = if min.is_finite() { min } else { 0.0 };
    let mut counts = [0u64; BINS];
    if max > min {
        for v in values {
            let i = (((v - min) / (max - min)) * BINS as f64) as usize;
            counts[i.min(BINS - 1)] += 1;
        }
    } else {
        counts[0] = values.len() as u64;
    }
    json!({ "min": min, "max": max, "counts": counts })
}

fn batch_json(b: &BatchMetrics) -> Value {
    json!({
        "id": b.id,
        "time_ms": b.time_ms,
        "records_in": b.records_in,
        "records_out": b.records_out,
        "input_rate": b.input_rate,
        "scheduling_ms": b.scheduling_delay.as_secs_f64() * 1000.0,
        "processing_ms": b.processing_time.as_secs_f64() * 1000.0,
        "total_ms": b.total_delay.as_secs_f64() * 1000.0,
        "latency_ms": b.latency.map(|l| l.as_secs_f64() * 1000.0),
        "delivery_ms": b.delivery.as_secs_f64() * 1000.0,
        "dead_letters": b.failed(),
        "stages": b.stages.iter().map(|s| json!({
            "name": &*s.name,
            "version": &*s.version,
            "records_in": s.records_in,
            "records_out": s.records_out,
            "dead_letters": s.failed,
            "busy_ms": s.busy.as_secs_f64() * 1000.0,
        })).collect::<Vec<_>>(),
    })
}

/// One pipeline's detail.
pub fn detail(info: &PipelineInfo) -> Value {
    let now = now_ms();
    let m = &info.metrics;
    let view = m.view();
    let width = view.timeline.width_ms();
    let points: Vec<Value> = view
        .timeline
        .buckets()
        .map(|b| {
            let avg = |sum: u64| {
                if b.busy_batches > 0 {
                    ms(sum / b.busy_batches)
                } else {
                    0.0
                }
            };
            json!([
                b.start_ms,
                b.batches,
                b.records_in,
                b.records_in as f64 * 1000.0 / view.timeline.covered_ms(b) as f64,
                avg(b.scheduling.0),
                ms(b.scheduling.1),
                avg(b.processing.0),
                ms(b.processing.1),
                avg(b.total.0),
                ms(b.total.1),
                b.dead_letters,
            ])
        })
        .collect();
    let window_start = view.timeline.buckets().next().map_or(0, |b| b.start_ms);
    let shown: Vec<&BatchMetrics> = view
        .recent
        .iter()
        .filter(|b| b.time_ms >= window_start)
        .collect();
    let series =
        |f: fn(&BatchMetrics) -> f64| bins(&shown.iter().map(|b| f(b)).collect::<Vec<_>>());
    let histograms = json!({
        "batches": shown.len(),
        "input_rate": series(|b| b.input_rate),
        "scheduling_ms": series(|b| b.scheduling_delay.as_secs_f64() * 1000.0),
        "processing_ms": series(|b| b.processing_time.as_secs_f64() * 1000.0),
        "total_ms": series(|b| b.total_delay.as_secs_f64() * 1000.0),
    });
    let batches: Vec<Value> = view
        .recent
        .iter()
        .rev()
        .take(BATCH_ROWS)
        .map(batch_json)
        .collect();
    let (load, delivery_load) = view.timeline.load(now, RECENT_MS);
    let totals = view.totals.clone();
    let last = view.last.as_ref().map(batch_json);
    drop(view);
    let stages: Vec<Value> = m
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let status = info
                .stages
                .iter()
                .find(|e| *e.settings.name == *s.name)
                .map(|e| e.handle.status());
            let (busy, blocked) = load.get(i).copied().unwrap_or_default();
            let calls: serde_json::Map<String, Value> = CallOutcome::ALL
                .iter()
                .enumerate()
                .map(|(k, o)| (o.as_str().to_string(), json!(s.calls[k].get())))
                .collect();
            let reloads: serde_json::Map<String, Value> = ReloadOutcome::ALL
                .iter()
                .enumerate()
                .map(|(k, o)| (o.as_str().to_string(), json!(s.reloads[k].get())))
                .collect();
            json!({
                "name": &*s.name,
                "version": &*s.version(),
                "probation": status.as_ref().is_some_and(|st| st.probation),
                "previous": status.as_ref().map(|st| st.previous.iter().map(|v| v.label.clone()).collect::<Vec<_>>()),
                "records_in": s.records_in.get(),
                "records_out": s.records_out.get(),
                "dead_letters": s.dead_letters.get(),
                "memory_bytes": s.memory.get(),
                "busy": busy,
                "backpressure": blocked,
                "calls": calls,
                "reloads": reloads,
            })
        })
        .collect();
    let sources: Vec<Value> = m
        .sources
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "records": s.records.get(),
                "lag": s.lag().into_iter().map(|((topic, partition), lag)| json!({
                    "topic": topic, "partition": partition, "lag": lag,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let sinks: Vec<Value> = m
        .sinks
        .iter()
        .map(|s| json!({ "name": s.name, "records": s.records.get() }))
        .collect();
    let error = match &info.state {
        RunState::Failed(e) => Some(e.clone()),
        _ => None,
    };
    json!({
        "tenant": info.key.tenant,
        "name": info.key.name,
        "state": state_name(&info.state),
        "error": error,
        "now_ms": now,
        "started_ms": m.started_ms,
        "interval_ms": m.interval.as_millis() as u64,
        "totals": {
            "batches": totals.batches,
            "batches_with_records": totals.busy_batches,
            "records_in": totals.records_in,
            "records_out": totals.records_out,
            "dead_letters": totals.failed,
        },
        "timeline": {
            "width_ms": width,
            "columns": ["start_ms", "batches", "records_in", "input_rate", "scheduling_avg_ms",
                        "scheduling_max_ms", "processing_avg_ms", "processing_max_ms",
                        "total_avg_ms", "total_max_ms", "dead_letters"],
            "points": points,
        },
        "histograms": histograms,
        "batches": batches,
        "last_batch": last,
        "stages": stages,
        "delivery_load": delivery_load,
        "sources": sources,
        "sinks": sinks,
        "queue": { "depth": m.queue_depth.get(), "capacity": m.queue_capacity },
        "versions": m.journal.versions(),
        "problems": m.journal.problems(),
        "checkpoints": { "count": m.checkpoints.get(), "last": m.last_checkpoint() },
        "state_bytes": m.state_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_split_the_smallest_to_the_largest_value_in_ten() {
        let b = bins(&[10.0, 11.0, 15.0, 19.99, 20.0]);
        assert_eq!(
            (b["min"].as_f64(), b["max"].as_f64()),
            (Some(10.0), Some(20.0))
        );
        let counts: Vec<u64> = serde_json::from_value(b["counts"].clone()).unwrap();
        assert_eq!(counts, [1, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
        let same = bins(&[3.0, 3.0]);
        assert_eq!(same["counts"][0], 2);
        let empty = bins(&[]);
        assert_eq!(
            (empty["min"].as_f64(), empty["counts"][0].as_u64()),
            (Some(0.0), Some(0))
        );
    }
}

#[cfg(test)]
mod list_tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::{Labels, PipelineMetrics, Shape};

    fn info(tenant: &str, name: &str, records: u64) -> PipelineInfo {
        let metrics = PipelineMetrics::new(Shape {
            labels: Labels {
                tenant: Some(tenant.into()),
                pipeline: name.into(),
            },
            interval: Duration::from_secs(1),
            stages: vec![],
            sources: vec![],
            sinks: vec![],
            queue_capacity: 4,
        });
        let now = now_ms();
        let mut reporter =
            crate::telemetry::Reporter::new(metrics.labels.clone(), metrics.interval);
        let batch = crate::telemetry::BatchMetrics {
            id: 0,
            time_ms: now - 2000,
            records_in: records as usize,
            records_out: records as usize,
            input_rate: records as f64,
            scheduling_delay: Duration::from_millis(1),
            processing_time: Duration::from_millis(records),
            total_delay: Duration::from_millis(records + 1),
            latency: None,
            delivery: Duration::ZERO,
            stages: vec![],
            pipeline_input: true,
            pipeline_output: true,
        };
        crate::telemetry::events::BatchDone {
            metrics: &metrics,
            reporter: &mut reporter,
            batch: &batch,
        }
        .emit();
        PipelineInfo {
            key: crate::supervisor::PipelineKey {
                tenant: Some(tenant.into()),
                name: name.into(),
            },
            state: RunState::Running,
            stages: vec![],
            metrics,
            tasks: None,
        }
    }

    #[test]
    fn the_list_is_filtered_sorted_and_paged_on_the_server() {
        let all: Vec<PipelineInfo> = (0..120)
            .map(|i| {
                info(
                    if i % 2 == 0 { "even" } else { "odd" },
                    &format!("p{i:03}"),
                    i,
                )
            })
            .collect();
        let page = list(&all, &ListQuery::default());
        assert_eq!(
            (page["total"].as_u64(), page["matching"].as_u64()),
            (Some(120), Some(120))
        );
        assert_eq!(
            page["pipelines"].as_array().unwrap().len(),
            50,
            "50 rows by default"
        );
        assert_eq!(page["pipelines"][0]["name"], "p000");
        let q = ListQuery {
            q: Some("ODD/P11".into()),
            sort: Some("rate".into()),
            ..ListQuery::default()
        };
        let odd = list(&all, &q);
        // odd/p111, p113, p115, p117, p119: the busiest first.
        let names: Vec<&str> = odd["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["p119", "p117", "p115", "p113", "p111"]);
        let q = ListQuery {
            sort: Some("delay".into()),
            offset: Some(100),
            limit: Some(500),
            ..ListQuery::default()
        };
        let last = list(&all, &q);
        assert_eq!(last["limit"], 200);
        assert_eq!(last["pipelines"].as_array().unwrap().len(), 20);
        assert_eq!(
            last["pipelines"][19]["name"], "p000",
            "the shortest delay last"
        );
    }
}

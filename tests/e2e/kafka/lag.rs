//! The Kafka source's consumer lag per partition on `/metrics`
//! (`sluice_kafka_consumer_lag`): messages are behind while a slow stage
//! holds the pipeline back, and none once every message is processed and
//! its offset committed. With `tasks = "per-partition"`, each task's phase
//! and lag (`sluice_task_phase`, `sluice_task_lag`).

use std::time::Duration;

use super::*;
use crate::observe::Run;

/// Pipeline `name`: `source` (a `[[sources]]` table) → a stage spinning
/// `spin` iterations per record → null, in batches of at most 100
/// records, with top-level keys `top`.
fn slow_pipeline(name: &str, top: &str, source: &str, spin: u64) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"100ms\"\nmax_batch_records = 100\n{top}\n\n\
         {source}\n[[stages]]\nname = \"slow\"\nplugin = '{}'\n\
         config = {{ mode = \"slow\", spin = \"{spin}\" }}\n\n[[sinks]]\ntype = \"null\"\n",
        plugin("misbehave").display()
    )
}

/// The lag samples: partition → messages behind.
fn lag(run: &Run) -> BTreeMap<String, f64> {
    run.metrics()
        .1
        .into_iter()
        .filter(|s| s.name == "sluice_kafka_consumer_lag")
        .map(|s| (s.labels["partition"].clone(), s.value))
        .collect()
}

#[test]
fn consumer_lag_is_exported_per_partition_and_drains_to_zero() {
    let brokers = shared_broker();
    let topic = unique("lagged");
    create_topic(&brokers, &topic, 2);
    let text = sample_text(20_000, 11);
    produce(&brokers, &topic, &line_messages(&text, 2));
    let s = Scratch::new();
    s.write(
        "p.toml",
        &slow_pipeline(
            "lagging",
            "# One chunk of queue: the source must wait for the slow stage, so the\n\
             # partitions stay behind while it works.\nqueue_capacity = 1",
            &kafka_source(&brokers, &topic, &unique("group"), ""),
            200_000,
        ),
    );
    let run = Run::start(&s, "p.toml", &[]);
    eventually(Duration::from_secs(60), "both partitions behind", || {
        let lag = lag(&run);
        lag.len() == 2 && lag.values().sum::<f64>() > 0.0
    });
    eventually(
        Duration::from_secs(120),
        "every message read and committed",
        || {
            let m = run.metrics().1;
            let read =
                crate::observe::value(&m, "sluice_source_records_total", &[("source", "kafka-0")]);
            let lag = lag(&run);
            read == 20_000.0 && lag.len() == 2 && lag.values().all(|l| *l == 0.0)
        },
    );
    let (text, _) = run.metrics();
    assert!(text.contains(&format!("topic=\"{topic}\"")), "{text}");
    assert!(run.process.stop(Duration::from_secs(30)).success());
}

/// The task samples of `name`: partition → (phase or lag) value, by label.
fn task_samples(run: &Run, name: &str, label: &str) -> BTreeMap<String, String> {
    run.metrics()
        .1
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| {
            let value = match label {
                "" => s.value.to_string(),
                label => s.labels[label].clone(),
            };
            (s.labels["partition"].clone(), value)
        })
        .collect()
}

#[test]
fn each_tasks_phase_and_lag_are_exported_and_the_lag_drains_to_zero() {
    let brokers = shared_broker();
    let topic = unique("tasked");
    create_topic(&brokers, &topic, 2);
    let text = sample_text(20_000, 12);
    produce(&brokers, &topic, &line_messages(&text, 2));
    let s = Scratch::new();
    let name = unique("tasks");
    s.write(
        "p.toml",
        &slow_pipeline(
            &name,
            "tasks = \"per-partition\"\nstate_dir = \"state\"",
            &kafka_source(&brokers, &topic, &unique("group"), ""),
            // About 2 ms a record, so each task is 10-20 s behind: the
            // consumer's statistics (every second) see it.
            1_000_000,
        ),
    );
    let run = Run::start(&s, "p.toml", &[]);
    eventually(Duration::from_secs(60), "both tasks running", || {
        let phases = task_samples(&run, "sluice_task_phase", "phase");
        phases.len() == 2 && phases.values().all(|p| p == "running")
    });
    let (text, _) = run.metrics();
    for p in 0..2 {
        assert!(
            text.contains(&format!(
                "task=\"{name}.p{p}\",topic=\"{topic}\",partition=\"{p}\""
            )),
            "{text}"
        );
    }
    eventually(Duration::from_secs(60), "the tasks behind", || {
        let lag = task_samples(&run, "sluice_task_lag", "");
        lag.len() == 2 && lag.values().any(|l| l != "0")
    });
    eventually(Duration::from_secs(180), "every message processed", || {
        let lag = task_samples(&run, "sluice_task_lag", "");
        lag.len() == 2 && lag.values().all(|l| l == "0")
    });
    assert!(run.process.stop(Duration::from_secs(30)).success());
}

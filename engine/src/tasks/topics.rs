//! The topics a partitioned pipeline makes for itself: changelogs
//! (compacted, a stateful stage's state) and repartition topics (a
//! `partition_by` stage's input; `retention.ms = -1`, since records keep
//! their input's timestamps, and nothing purges what the next part has
//! committed yet). Each has the input topic's partition
//! count, so that partition `n` of every one of them belongs with
//! partition `n` of the input; a missing one is created, an existing one
//! with another count is refused, naming both.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::runtime::Handle;

/// Longest wait for metadata.
const WAIT: Duration = Duration::from_secs(60);

/// What an internal topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stage's state, compacted.
    Changelog,
    /// Records on their way to the task that owns their key.
    Repartition,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Changelog => "changelog",
            Kind::Repartition => "repartition",
        }
    }

    fn cleanup_policy(self) -> &'static str {
        match self {
            Kind::Changelog => "compact",
            Kind::Repartition => "delete",
        }
    }

    fn why_counts_match(self) -> &'static str {
        match self {
            Kind::Changelog => {
                "a task's state lives in the changelog partition of its input partition"
            }
            Kind::Repartition => {
                "a key's records go to the same partition number whichever topic they come from"
            }
        }
    }
}

/// Creates the missing topics of `topics`, of `kind`, with as many
/// partitions as `input` has; returns that count. An existing one with
/// another count is an error naming both, as is a missing `input`.
pub fn ensure<'t>(
    config: &ClientConfig,
    runtime: &Handle,
    input: &str,
    kind: Kind,
    topics: impl IntoIterator<Item = &'t String>,
) -> Result<i32, String> {
    let word = kind.word();
    let lookup = lookup(config)?;
    let partitions = input_partitions(&lookup, input)?;
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("cannot create an admin client for the {word} topics: {e}"))?;
    let check = |topic: &str, existing: i32| {
        if existing == partitions {
            return Ok(());
        }
        Err(format!(
            "{word} topic `{topic}` has {existing} partitions but the input topic `{input}` has \
             {partitions}: {}, so they must match (delete the {word} topic, or give the pipeline \
             another name)",
            kind.why_counts_match()
        ))
    };
    for topic in topics {
        if let Some(existing) = partition_count(lookup.client(), topic)? {
            check(topic, existing)?;
            continue;
        }
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", kind.cleanup_policy());
        if kind == Kind::Repartition {
            // Records keep their input's timestamps: time-based retention
            // could drop old ones before the next part reads them.
            new = new.set("retention.ms", "-1");
        }
        let created = runtime
            .block_on(admin.create_topics([&new], &AdminOptions::new()))
            .map_err(|e| format!("cannot create {word} topic `{topic}`: {e}"))?;
        for result in created {
            match result {
                Ok(_) => tracing::info!(
                    "created {word} topic {topic} ({partitions} partitions, {})",
                    match kind {
                        Kind::Changelog => "compacted",
                        Kind::Repartition => "kept until deleted: no time-based retention",
                    }
                ),
                // Another task or process made it meanwhile.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    if let Some(existing) = partition_count(lookup.client(), topic)? {
                        check(topic, existing)?;
                    }
                }
                Err((_, code)) => {
                    return Err(format!("cannot create {word} topic `{topic}`: {code}"));
                }
            }
        }
    }
    Ok(partitions)
}

/// A consumer's client, which never asks the broker to create a topic it
/// looks up (a producer's does, with the broker's default partition count,
/// where the broker allows it).
pub fn lookup(config: &ClientConfig) -> Result<BaseConsumer, String> {
    config
        .clone()
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| format!("cannot create a client to look up topics: {e}"))
}

/// The partition count of the input topic `input`; its absence is an
/// error.
pub fn input_partitions(lookup: &BaseConsumer, input: &str) -> Result<i32, String> {
    partition_count(lookup.client(), input)?
        .ok_or_else(|| format!("the input topic `{input}` does not exist"))
}

/// The partition count of `topic`, `None` when it does not exist.
pub(super) fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> Result<Option<i32>, String> {
    let metadata = client
        .fetch_metadata(Some(topic), WAIT)
        .map_err(|e| format!("cannot read the metadata of topic `{topic}`: {e}"))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

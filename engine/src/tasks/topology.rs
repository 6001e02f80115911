//! How a partitioned pipeline splits into parts, and the names of its
//! tasks and topics.
//!
//! A pipeline with no `partition_by` is one part: it reads the input topic
//! and writes to the sinks. Each stage with `partition_by` starts a new
//! part, which reads the topic `<pipeline>-<stage>-repartition` (the part
//! before it writes there, keyed by what the stage asks for). A task is one
//! part over one partition of its topic; every topic of a pipeline has the
//! input's partition count, so partition `n` of each part is co-partitioned
//! with partition `n` of the input.
//!
//! A record's partition of a repartition topic is what Kafka's own clients
//! pick for a key ([`partition_of`]), so a topic keyed by words that a
//! Java or librdkafka producer wrote is co-partitioned with Sluice's.
//!
//! Not here: running tasks (`member`, `task`).

use std::ops::Range;

use crate::batch::RecordRef;
use crate::config::PipelineSpec;
use crate::source::SourceConfig;
use crate::stage::PartitionBy;

/// Where a part's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// To the next part, through its repartition topic.
    Repartition {
        /// The topic.
        topic: String,
        /// What picks a record's partition.
        by: PartitionBy,
    },
    /// To the pipeline's sinks.
    Sinks,
}

/// One part of a partitioned pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The topic it reads: the input, or its repartition topic.
    pub topic: String,
    /// Its stages, as indexes into the pipeline's.
    pub stages: Range<usize>,
    /// Where its output goes.
    pub output: Output,
    /// The stage that starts it (`None` for the first part), which names
    /// its tasks.
    pub first_stage: Option<String>,
}

/// The parts of a partitioned pipeline, and its Kafka settings.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its parts, in order.
    pub parts: Vec<Part>,
}

impl Topology {
    /// The parts of `spec`, which `config` checked: one Kafka source of one
    /// topic.
    pub fn of(spec: &PipelineSpec) -> Topology {
        let input = match spec.sources.first().map(|s| &s.value) {
            Some(SourceConfig::Kafka(kafka)) => kafka.topics[0].clone(),
            _ => unreachable!("a per-partition pipeline reads one Kafka source (config checks)"),
        };
        let mut parts = Vec::new();
        let mut start = 0;
        let mut topic = input;
        let mut first_stage = None;
        for (i, stage) in spec.stages.iter().enumerate() {
            let Some(by) = stage.spec.partition_by else {
                continue;
            };
            let next = repartition_topic(&spec.name, &stage.spec.name);
            parts.push(Part {
                topic: std::mem::replace(&mut topic, next.clone()),
                stages: start..i,
                output: Output::Repartition { topic: next, by },
                first_stage: first_stage.replace(stage.spec.name.clone()),
            });
            start = i;
        }
        parts.push(Part {
            topic,
            stages: start..spec.stages.len(),
            output: Output::Sinks,
            first_stage,
        });
        Topology {
            pipeline: spec.name.clone(),
            parts,
        }
    }

    /// The part that reads `topic`.
    pub fn part_of(&self, topic: &str) -> Option<usize> {
        self.parts.iter().position(|p| p.topic == topic)
    }

    /// Every topic the pipeline's consumer reads.
    pub fn topics(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.topic.clone()).collect()
    }

    /// The name of the task of part `part` over partition `partition`:
    /// `<pipeline>.p<N>` for the first part, `<pipeline>.<stage>.p<N>` for a
    /// part that starts at `<stage>`. It names the task's state file
    /// (`<task>.redb`), its log lines and its transactions.
    pub fn task_name(&self, part: usize, partition: i32) -> String {
        match &self.parts[part].first_stage {
            None => format!("{}.p{partition}", self.pipeline),
            Some(stage) => format!("{}.{stage}.p{partition}", self.pipeline),
        }
    }
}

/// The partition, of `partitions`, that `record` goes to when grouped
/// `by` its key or value: Kafka's default partitioner for keyed records
/// (the Java client's murmur2 of the bytes, made positive, modulo the
/// count), so every producer sends a key to the same partition. Records
/// without a key, grouped by key, all go to the partition of the empty key.
pub fn partition_of(by: PartitionBy, record: &RecordRef<'_>, partitions: i32) -> i32 {
    let bytes = match by {
        PartitionBy::Key => record.key().unwrap_or_default(),
        PartitionBy::Value => record.value(),
    };
    (murmur2(bytes) & 0x7fff_ffff) as i32 % partitions.max(1)
}

/// MurmurHash2 with the seed and tail handling of Kafka's Java client
/// (`Utils.murmur2`), which librdkafka's `murmur2` partitioner matches.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// The compacted topic a stage's state is mirrored to.
pub fn changelog_topic(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}-{stage}-changelog")
}

/// The topic that feeds a stage with `partition_by`.
pub fn repartition_topic(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}-{stage}-repartition")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FolderBase, PipelineFile};
    use std::path::Path;

    /// `spec(stages)` with `partition_by = by` on stage `at`.
    fn partitioned(stages: &str, at: usize, by: PartitionBy) -> PipelineSpec {
        let mut spec = spec(stages);
        spec.stages[at].spec.partition_by = Some(by);
        spec
    }

    fn spec(stages: &str) -> PipelineSpec {
        let text = format!(
            "name = \"wc\"\nbatch_interval = \"100ms\"\ntasks = \"per-partition\"\n\
             [[sources]]\ntype = \"kafka\"\nbrokers = \"b:1\"\ntopics = [\"lines\"]\ngroup = \"g\"\n\
             {stages}\n[[sinks]]\ntype = \"null\"\n"
        );
        PipelineFile::parse(Path::new("p.toml"), text)
            .unwrap()
            .resolve(&FolderBase::of_file(Path::new("p.toml")))
            .unwrap()
    }

    #[test]
    fn one_part_without_partition_by() {
        let t = Topology::of(&spec(
            "[[stages]]\nname = \"split\"\nplugin = \"s.wasm\"\n[[stages]]\nname = \"count\"\nplugin = \"c.wasm\"\n",
        ));
        assert_eq!(
            t.parts,
            vec![Part {
                topic: "lines".into(),
                stages: 0..2,
                output: Output::Sinks,
                first_stage: None
            }]
        );
        assert_eq!(t.task_name(0, 3), "wc.p3");
        assert_eq!(t.topics(), ["lines"]);
    }

    #[test]
    fn partition_by_starts_a_part_fed_by_its_repartition_topic() {
        let t = Topology::of(&partitioned(
            "[[stages]]\nname = \"split\"\nplugin = \"s.wasm\"\n\
             [[stages]]\nname = \"count\"\nplugin = \"c.wasm\"\n\
             [[stages]]\nname = \"format\"\nplugin = \"f.wasm\"\n",
            1,
            PartitionBy::Value,
        ));
        assert_eq!(t.parts.len(), 2);
        assert_eq!(t.parts[0].stages, 0..1);
        assert_eq!(
            t.parts[0].output,
            Output::Repartition {
                topic: "wc-count-repartition".into(),
                by: PartitionBy::Value
            }
        );
        assert_eq!(t.parts[1].topic, "wc-count-repartition");
        assert_eq!(t.parts[1].stages, 1..3);
        assert_eq!(t.parts[1].output, Output::Sinks);
        assert_eq!(t.task_name(1, 0), "wc.count.p0");
        assert_eq!(t.part_of("wc-count-repartition"), Some(1));
        assert_eq!(t.part_of("other"), None);
        assert_eq!(changelog_topic("wc", "count"), "wc-count-changelog");
    }

    #[test]
    fn partition_by_on_the_first_stage_leaves_a_part_without_stages() {
        let t = Topology::of(&partitioned(
            "[[stages]]\nname = \"count\"\nplugin = \"c.wasm\"\n",
            0,
            PartitionBy::Key,
        ));
        assert_eq!(t.parts[0].stages, 0..0);
        assert_eq!(t.parts[1].stages, 0..1);
    }

    #[test]
    fn murmur2_matches_the_java_clients_values() {
        // The Java client's hashes, as librdkafka's own unit test lists them.
        for (bytes, hash) in [
            (&b"kafka"[..], 0xd067_cf64_u32),
            (b"giberish123456789", 0x8f55_2b0c),
            (b"1234", 0x9fc9_7b14),
            (b"234", 0xe7c0_09ca),
            (b"34", 0x8739_30da),
            (b"4", 0x5a4b_5ca1),
            (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x7842_4f1c),
            (b"", 0x106e_08d9),
        ] {
            assert_eq!(murmur2(bytes), hash, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_key_or_value_always_goes_to_the_same_partition() {
        let mut records = crate::batch::Records::default();
        records.push(Some(b"k1"), b"apple", 0, &[]);
        records.push(Some(b"k2"), b"apple", 0, &[]);
        records.push(None, b"pear", 0, &[]);
        let (a, b, c) = (records.get(0), records.get(1), records.get(2));
        for n in [1, 4, 6, 7] {
            let by_value = partition_of(PartitionBy::Value, &a, n);
            assert!((0..n).contains(&by_value));
            assert_eq!(by_value, partition_of(PartitionBy::Value, &b, n));
            // No key: the partition of the empty key.
            assert_eq!(
                partition_of(PartitionBy::Key, &c, n),
                (0x106e_08d9 & 0x7fff_ffff) % n
            );
        }
        assert_eq!(
            partition_of(PartitionBy::Key, &a, 6),
            (murmur2(b"k1") & 0x7fff_ffff) as i32 % 6
        );
    }
}

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
//! Not here: running tasks (`member`, `task`). `partition_by` is parsed
//! and split here, but the config checks refuse it until repartitioning is
//! built.

use std::ops::Range;

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

    /// `spec(stages)` with `partition_by = by` on stage `at` (the config
    /// checks refuse it in a file until repartitioning is built).
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
}

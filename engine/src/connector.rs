//! The connector registry's build switches: each network connector (Kafka,
//! Elasticsearch, object storage, the HTTP sink, ZeroMQ, MQTT, NATS) sits behind a cargo
//! feature of the `sluice` crate, all on by default. `SourceConfig` and
//! `SinkConfig` stay the one explicit list of types whatever is built; a
//! type whose feature is off parses into [`Disabled`], and checking the file
//! refuses it at its table with [`missing`]'s message (rather than serde's
//! bare "unknown variant"). This module owns only that; each connector's
//! code lives with the other sources and sinks.

use serde::Deserialize;

/// The settings of a connector this build left out: any keys, ignored,
/// since the file is refused anyway.
#[derive(Debug, Clone, Deserialize)]
pub struct Disabled {}

/// The message for a pipeline that names connector `type_name`, which
/// needs cargo feature `feature`.
pub fn missing(type_name: &str, feature: &str) -> String {
    format!(
        "`type = \"{type_name}\"`: this sluice was built without the `{feature}` connector; \
         build with `--features {feature}`"
    )
}

/// The connector features this build has, for `sluice --version` style
/// reports and tests.
pub const BUILT: &[(&str, bool)] = &[
    ("kafka", cfg!(feature = "kafka")),
    ("elasticsearch", cfg!(feature = "elasticsearch")),
    ("object-store", cfg!(feature = "object-store")),
    ("parquet", cfg!(feature = "parquet")),
    ("http-sink", cfg!(feature = "http-sink")),
    ("zeromq", cfg!(feature = "zeromq")),
    ("mqtt", cfg!(feature = "mqtt")),
    ("nats", cfg!(feature = "nats")),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::PipelineFile;

    fn check(sink: &str) -> Result<(), String> {
        let text = format!(
            "name = \"p\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"stdin\"\n[[sinks]]\n{sink}\n"
        );
        PipelineFile::parse(Path::new("p.toml"), text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Built without a connector, its `type` is refused at the table with
    /// the feature to build with; built with it, the same table is taken.
    #[test]
    fn a_left_out_connector_is_refused_at_its_table_naming_the_feature() {
        let cases = [
            (
                "kafka",
                "type = \"kafka\"\nbrokers = \"h:9092\"\ntopic = \"t\"",
            ),
            (
                "elasticsearch",
                "type = \"elasticsearch\"\nurl = \"http://h:9200\"\nindex = \"i\"",
            ),
            (
                "object-store",
                "type = \"object-store\"\nurl = \"s3://b/p\"",
            ),
            ("http-sink", "type = \"http\"\nurl = \"http://h/in\""),
            (
                "mqtt",
                "type = \"mqtt\"\nurl = \"mqtt://h:1883\"\ntopic = \"a\"",
            ),
            (
                "nats",
                "type = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"a\"",
            ),
        ];
        for (feature, sink) in cases {
            let built = super::BUILT.iter().any(|(f, on)| *f == feature && *on);
            match check(sink) {
                Ok(()) => assert!(built, "{feature} is off, yet `{sink}` was taken"),
                Err(e) => {
                    assert!(!built, "{feature} is on, yet: {e}");
                    assert!(e.starts_with("p.toml:5:1: `type = "), "{e}");
                    assert!(
                        e.contains(&format!("built without the `{feature}` connector; build with `--features {feature}`")),
                        "{e}"
                    );
                }
            }
        }
    }
}

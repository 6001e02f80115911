//! The connector registry's build switches: each network connector (Kafka,
//! Elasticsearch, object storage, the HTTP sink) sits behind a cargo
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
    ("http-sink", cfg!(feature = "http-sink")),
];

//! Tenants: their tokens (shown once, kept only as SHA-256 hashes) and
//! their quotas, with the defaults an operator gets without setting any.
//! The meters that enforce the quotas that are rates or running totals are
//! in `crate::quota`.

use serde::{Deserialize, Serialize};

use crate::units::ByteSize;

/// What one tenant may use. Every field has a default; a request that
/// would exceed one is refused with `403` naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Pipelines at once, running or stopped. Default 20.
    pub pipelines: u32,
    /// Stages over all its pipelines. Default 100.
    pub stages: u32,
    /// Bytes of stored plugins, every version counted. Default `512MiB`.
    pub plugin_bytes: ByteSize,
    /// The sum of its stages' `memory_limit`s. Default `4GiB`.
    pub memory: ByteSize,
    /// Workers of the stage pool its plugins may use at once. Default 1.
    pub cpu_share: u32,
    /// Records per second taken through `…/ingest`, over all its
    /// pipelines; more are answered `429` with `Retry-After`. Default
    /// 100,000.
    pub ingest_rate: u64,
    /// Bytes of pipeline state (checkpoints, windows, write-ahead logs).
    /// A pipeline that grows its tenant's state past it is stopped, with
    /// the quota named in its error. Default `1GiB`.
    pub state_bytes: ByteSize,
    /// Bytes of dead-lettered records kept. A batch that would exceed it
    /// fails its pipeline, naming the quota, instead of being dropped.
    /// Default `256MiB`.
    pub dead_letter_bytes: ByteSize,
    /// API calls per second; more are answered `429` with `Retry-After`.
    /// Default 200.
    pub api_rate: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            pipelines: 20,
            stages: 100,
            plugin_bytes: ByteSize(512 << 20),
            memory: ByteSize(4 << 30),
            cpu_share: 1,
            ingest_rate: 100_000,
            state_bytes: ByteSize(1 << 30),
            dead_letter_bytes: ByteSize(256 << 20),
            api_rate: 200,
        }
    }
}

impl Quotas {
    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpu_share == 0 {
            return Err("quota `cpu_share` must be at least 1".into());
        }
        if self.ingest_rate == 0 {
            return Err("quota `ingest_rate` must be at least 1".into());
        }
        if self.api_rate == 0 {
            return Err("quota `api_rate` must be at least 1".into());
        }
        Ok(())
    }
}

/// A new tenant token: `sl_` then 32 random bytes in hex.
pub fn new_token() -> std::io::Result<String> {
    Ok(format!("sl_{}", crate::control::token::generate()?))
}

/// How a token is kept: its SHA-256 in hex (tokens are random and long,
/// so a fast hash is enough; nothing reversible is stored).
pub fn token_hash(token: &str) -> String {
    crate::plugin::content_hash(token.as_bytes())
}

/// The bytes of every file under `dir` (0 when it does not exist).
pub fn folder_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_read_from_json_with_defaults_and_sizes_as_text() {
        let q: Quotas = serde_json::from_str(r#"{"pipelines": 3, "memory": "512MiB"}"#).unwrap();
        assert_eq!(q.pipelines, 3);
        assert_eq!(q.memory, ByteSize(512 << 20));
        assert_eq!(q.stages, Quotas::default().stages);
        assert!(serde_json::from_str::<Quotas>(r#"{"pipeline": 3}"#).is_err());
        let text = serde_json::to_string(&q).unwrap();
        assert!(text.contains("\"memory\":\"512MiB\""), "{text}");
    }
}

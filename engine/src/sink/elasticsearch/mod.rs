//! `type = "elasticsearch"`: records indexed into Elasticsearch or
//! OpenSearch through the `_bulk` API (`application/x-ndjson`), over the
//! same HTTP client as the other network sinks (see `net`).
//!
//! Why no dedicated client crate: the official `elasticsearch` crate is an
//! alpha that follows one server's API, and the `opensearch` crate the
//! other; both are generated wrappers over reqwest. `_bulk` is one request
//! shape that both servers share, so the sink speaks it over reqwest
//! directly and works with either.
//!
//! **Delivery.** Every record is its own document with a deterministic id,
//! so sending a batch again overwrites what it wrote instead of adding to
//! it. Under at-least-once the id comes from the pipeline, the sink's place,
//! the source positions the batch ends at and the record's place in the
//! batch, so a batch replayed as it was overwrites itself. Under
//! exactly-once the sink holds each batch until its checkpoint is durable
//! (`commit`) and ids come from the checkpoint's number; the engine keeps
//! the batch's output with its checkpoint, so a crash between the
//! checkpoint and the bulk request is repaired at start by sending the kept
//! output again under the same ids. Each checkpoint's documents are thus in
//! the index exactly once. `id = "key"` makes the record's key the id
//! (an upsert per key).
//!
//! **Failures.** A request that cannot reach any node, or that the server
//! answers with `429` or `5xx`, is retried with back-off until it goes
//! through (or `give_up_after`); items refused with `429`/`5xx` inside a
//! successful response are sent again alone. Items refused for good (a
//! mapping error, a bad id) go to the sink's dead-letter folder as jsonl
//! records with an `error` field holding the server's reason; the rest of
//! the batch is indexed.

mod bulk;

use std::path::PathBuf;

use serde::Deserialize;

use super::net::{Attempt, Client, Connection, describe, excerpt, retryable};
use super::template::Template;
use super::{BatchMeta, Sink, SinkContext, SinkError};
use crate::batch::{Records, SourcePosition};
use crate::stage::DeadLetter;
use crate::units::{ByteSize, HumanDuration};

use bulk::Item;

/// Indexes records into Elasticsearch or OpenSearch.
///
/// ```toml
/// [[sinks]]
/// type = "elasticsearch"
/// url = "http://127.0.0.1:9200"     # or ["http://a:9200", "http://b:9200"]
/// index = "logs-%Y.%m.%d"           # from each record's event time, UTC
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// One node's URL (`http://host:9200`, `https://…`) or a list of them;
    /// a request that cannot reach one goes to the next.
    pub url: Nodes,
    /// The index, or a template of it with the record's event time (UTC):
    /// `%Y`, `%m`, `%d`, `%H`, `%M`, e.g. `"logs-%Y.%m.%d"`.
    pub index: String,
    /// Document ids: `"auto"` (the default: deterministic, so a replay
    /// overwrites) or `"key"` (the record's key, so records with one key
    /// update one document; a record without a key is dead-lettered).
    #[serde(default)]
    pub id: IdFrom,
    /// Most bytes in one `_bulk` request, e.g. `"5MiB"` (the default); a
    /// batch is sent in as many requests as it needs.
    #[serde(default = "default_bulk_bytes")]
    pub bulk_max_bytes: ByteSize,
    /// Most records in one `_bulk` request; default 1,000.
    #[serde(default = "default_bulk_records")]
    pub bulk_max_records: usize,
    /// The folder for records the server refused, relative to the pipeline
    /// file; default `dead-letter/<pipeline>/sink-<n>` beside it.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Longest wait for one request; default `"30s"`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// How long a batch is retried while no node answers, or they answer
    /// `429`/`5xx`, before the pipeline fails (and reads the batch again at
    /// its next start). Default: until a node takes it.
    #[serde(default)]
    pub give_up_after: Option<HumanDuration>,
    /// A PEM file of certificate authorities to trust for `https` nodes
    /// besides the system's, relative to the pipeline file (under `sluice
    /// serve`, a path inside the tenant's files root).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A user name for basic authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding `username`'s password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The environment variable holding an API key (the base64 `id:key`
    /// form), sent as `Authorization: ApiKey …`.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// One node or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Nodes {
    /// One URL.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Nodes {
    fn list(&self) -> Vec<String> {
        match self {
            Nodes::One(url) => vec![url.clone()],
            Nodes::Many(urls) => urls.clone(),
        }
    }
}

/// Where document ids come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdFrom {
    /// Derived from what produced the record (replay-stable).
    #[default]
    Auto,
    /// The record's key.
    Key,
}

fn default_bulk_bytes() -> ByteSize {
    ByteSize(5 << 20)
}

fn default_bulk_records() -> usize {
    1000
}

impl ElasticsearchConfig {
    fn connection(&self) -> Connection {
        Connection {
            timeout: self.timeout,
            give_up_after: self.give_up_after,
            ca_file: self.ca_file.clone(),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            api_key_env: self.api_key_env.clone(),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let nodes = self.url.list();
        if nodes.is_empty() {
            return Err("elasticsearch sink: `url` lists no node".into());
        }
        for node in &nodes {
            let ok = node
                .strip_prefix("http://")
                .or_else(|| node.strip_prefix("https://"));
            if ok.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
                return Err(format!(
                    "elasticsearch sink: invalid `url` `{node}`: expected http://host:port or https://host:port"
                ));
            }
        }
        let template = Template::parse(&self.index)
            .map_err(|e| format!("elasticsearch sink: invalid `index` {e}"))?;
        // The rules hold for every name it makes: the fields are digits.
        check_index_name(&template.render(0))
            .map_err(|e| format!("elasticsearch sink: invalid `index` `{}`: {e}", self.index))?;
        if !(1..=100_000).contains(&self.bulk_max_records) {
            return Err(format!(
                "elasticsearch sink: invalid `bulk_max_records` `{}`: must be between 1 and 100000",
                self.bulk_max_records
            ));
        }
        if !(1 << 10..=1 << 30).contains(&self.bulk_max_bytes.0) {
            return Err(format!(
                "elasticsearch sink: invalid `bulk_max_bytes` `{}`: must be between 1KiB and 1GiB",
                self.bulk_max_bytes
            ));
        }
        self.connection()
            .validate()
            .map_err(|e| format!("elasticsearch sink: {e}"))
    }
}

/// Index names are lowercase and avoid a few characters (both servers'
/// rules); the template's fields fill in digits only.
fn check_index_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.starts_with(['_', '-', '+']) {
        return Err("may not start with `_`, `-` or `+`".into());
    }
    if let Some(ch) = name
        .chars()
        .find(|ch| ch.is_uppercase() || " \\/*?\"<>|,#:".contains(*ch))
    {
        return Err(format!(
            "`{ch}` is not allowed in an index name (lowercase, and none of \\ / * ? \" < > | , # : or space)"
        ));
    }
    Ok(())
}

/// The running sink.
pub struct ElasticsearchSink {
    client: Client,
    nodes: Vec<String>,
    /// The node requests go to now; the next one after a failure.
    node: usize,
    index: Template,
    id: IdFrom,
    bulk_bytes: usize,
    bulk_records: usize,
    dead_letter: DeadLetter,
    /// What the ids of this sink start from: pipeline and place.
    origin: String,
    /// Exactly-once: the batch waiting for its checkpoint.
    held: Option<(u64, u64, u64, Records)>,
    exactly_once: bool,
    body: Vec<u8>,
}

impl ElasticsearchSink {
    /// Sets up the client; reads credentials from the environment.
    pub fn new(c: &ElasticsearchConfig, cx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let nodes: Vec<String> = c
            .url
            .list()
            .into_iter()
            .map(|n| n.trim_end_matches('/').to_string())
            .collect();
        let who = format!("elasticsearch {}", nodes.join(","));
        let client = Client::new(&c.connection(), who)?;
        let index = Template::parse(&c.index).map_err(|e| client.error(e))?;
        let dead_letter = cx.dead_letter.clone();
        Ok(ElasticsearchSink {
            client,
            nodes,
            node: 0,
            index,
            id: c.id,
            bulk_bytes: c.bulk_max_bytes.0 as usize,
            bulk_records: c.bulk_max_records,
            dead_letter,
            origin: format!("{}\0{}", cx.pipeline, cx.index),
            held: None,
            exactly_once: cx.exactly_once,
            body: Vec::new(),
        })
    }

    /// The start all of a batch's document ids share: a hash of the sink's
    /// origin and what identifies the batch (`what`), so ids are short and
    /// the same whenever the same batch is sent.
    fn id_base(&self, what: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(self.origin.as_bytes())
            .chain_update([0])
            .chain_update(what.as_bytes())
            .finalize();
        digest[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Sends `records` under ids `<base>-<place>`, retrying as needed;
    /// dead-letters what the server refuses for good. `batch` and `time`
    /// name the dead-letter file.
    fn send(
        &mut self,
        records: &Records,
        base: &str,
        batch: u64,
        time: u64,
    ) -> Result<(), SinkError> {
        let mut rejected: Vec<(usize, String)> = Vec::new();
        // Index names, worked out once per batch when they do not vary.
        let fixed = (!self.index.uses_time()).then(|| self.index.render(0));
        let mut names = Vec::with_capacity(records.len());
        let mut ids = Vec::with_capacity(records.len());
        let mut todo = Vec::with_capacity(records.len());
        for (place, record) in records.iter().enumerate() {
            names.push(match &fixed {
                Some(name) => name.clone(),
                None => self.index.render(record.timestamp()),
            });
            match self.id {
                IdFrom::Auto => ids.push(Some(format!("{base}-{place}"))),
                IdFrom::Key => match record.key() {
                    Some(key) => ids.push(Some(String::from_utf8_lossy(key).into_owned())),
                    None => {
                        ids.push(None);
                        rejected.push((place, "`id = \"key\"` but the record has no key".into()));
                        continue;
                    }
                },
            }
            todo.push(place);
        }
        let mut start = 0;
        while start < todo.len() {
            // One request's worth: by count, then by bytes (at least one).
            let mut end = start;
            let mut bytes = 0;
            while end < todo.len() && end - start < self.bulk_records {
                let size = records.get(todo[end]).value().len() + names[todo[end]].len() + 96;
                if end > start && bytes + size > self.bulk_bytes {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let mut pending: Vec<usize> = todo[start..end].to_vec();
            self.bulk(records, &names, &ids, &mut pending, &mut rejected)?;
            start = end;
        }
        if !rejected.is_empty() {
            rejected.sort();
            let reasons: Vec<(usize, &str)> =
                rejected.iter().map(|(i, r)| (*i, r.as_str())).collect();
            let file = self
                .dead_letter
                .write(batch, time, records, &reasons)
                .map_err(|e| {
                    self.client.error(format!(
                        "cannot dead-letter {} refused record(s) in {}: {e}",
                        rejected.len(),
                        self.dead_letter.dir.display()
                    ))
                })?;
            tracing::warn!(
                "{}: the server refused {} of {} record(s) (first: {}); dead-lettered to {}",
                self.client.who,
                rejected.len(),
                records.len(),
                rejected[0].1,
                file.display()
            );
        }
        Ok(())
    }

    /// One bulk request for the records in `pending`, sent until every
    /// item is indexed or refused for good (those join `rejected`).
    fn bulk(
        &mut self,
        records: &Records,
        names: &[String],
        ids: &[Option<String>],
        pending: &mut Vec<usize>,
        rejected: &mut Vec<(usize, String)>,
    ) -> Result<(), SinkError> {
        let mut body = std::mem::take(&mut self.body);
        let nodes = self.nodes.clone();
        let mut node = self.node;
        let result = self.client.retry("a _bulk request", |client| {
            body.clear();
            for &i in pending.iter() {
                bulk::append(&mut body, &names[i], ids[i].as_deref(), records.get(i));
            }
            let url = format!("{}/_bulk", nodes[node]);
            let request = client
                .http
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body.clone());
            let request = client.authorize(request, "ApiKey");
            let response = client.runtime.block_on(async {
                let response = request.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            });
            let (status, answer) = match response {
                Ok(r) => r,
                Err(e) => {
                    node = (node + 1) % nodes.len();
                    return Attempt::Retry(format!("{url}: {}", describe(&e)));
                }
            };
            if retryable(status) {
                node = (node + 1) % nodes.len();
                return Attempt::Retry(format!("{url} answered {status}: {}", excerpt(&answer)));
            }
            if !status.is_success() {
                return Attempt::Fail(format!("{url} answered {status}: {}", excerpt(&answer)));
            }
            let items = match bulk::parse_response(&answer, pending.len()) {
                Ok(items) => items,
                Err(e) => return Attempt::Fail(format!("{url}: {e}")),
            };
            let mut again = Vec::new();
            let mut why = String::new();
            for (&i, item) in pending.iter().zip(items) {
                match item {
                    Item::Done => {}
                    Item::Retry(reason) => {
                        why = reason;
                        again.push(i);
                    }
                    Item::Rejected(reason) => rejected.push((i, reason)),
                }
            }
            let refused = again.len();
            *pending = again;
            if pending.is_empty() {
                Attempt::Done(())
            } else {
                Attempt::Retry(format!("{refused} item(s) refused for now: {why}"))
            }
        });
        self.node = node;
        self.body = body;
        result
    }
}

/// What identifies a batch under at-least-once: the positions it ends at
/// (sources that replay give the same ones), or, without positions, its
/// time and number in the run.
fn batch_identity(positions: &[SourcePosition], time_ms: u64, id: u64) -> String {
    if positions.is_empty() {
        return format!("time {time_ms} batch {id}");
    }
    let mut out = String::from("positions");
    for p in positions {
        out.push_str(&format!(" {}={}", p.source, p.position));
    }
    out
}

impl Sink for ElasticsearchSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        match batch.checkpoint.filter(|_| self.exactly_once) {
            Some(checkpoint) => {
                // Sent at commit, once the checkpoint is durable.
                self.held = Some((checkpoint, batch.id, batch.time_ms, records.clone()));
                Ok(())
            }
            None => {
                let base = self.id_base(&batch_identity(batch.positions, batch.time_ms, batch.id));
                self.send(records, &base, batch.id, batch.time_ms)
            }
        }
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let Some((checkpoint, id, time, records)) = self.held.take() else {
            return Ok(());
        };
        debug_assert_eq!(Some(checkpoint), batch.checkpoint);
        let base = self.id_base(&format!("checkpoint {checkpoint}"));
        self.send(&records, &base, id, time)
    }

    fn recover(&mut self, checkpoint: u64, output: Option<Records>) -> Result<(), SinkError> {
        let Some(records) = output.filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        // The crash may have come before this checkpoint's bulk request:
        // send it again; the same ids overwrite whatever did arrive.
        tracing::info!(
            "{}: sending checkpoint {checkpoint}'s {} record(s) again (same ids: what arrived \
             before the stop is overwritten)",
            self.client.who,
            records.len()
        );
        let base = self.id_base(&format!("checkpoint {checkpoint}"));
        self.send(&records, &base, checkpoint, crate::batch::now_ms())
    }

    fn keeps_output(&self) -> bool {
        self.exactly_once
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_checked() {
        assert!(check_index_name("logs-2026.12.02").is_ok());
        assert!(check_index_name("Logs").unwrap_err().contains("`L`"));
        assert!(check_index_name("_x").is_err());
        assert!(check_index_name("a b").is_err());
    }

    #[test]
    fn batch_identity_depends_on_positions_only_when_there_are_some() {
        let p = |s: &str| {
            vec![SourcePosition {
                source: 0,
                position: s.into(),
            }]
        };
        assert_eq!(
            batch_identity(&p("a:1"), 1, 2),
            batch_identity(&p("a:1"), 9, 7)
        );
        assert_ne!(
            batch_identity(&p("a:1"), 1, 2),
            batch_identity(&p("a:2"), 1, 2)
        );
        assert_ne!(batch_identity(&[], 1, 2), batch_identity(&[], 1, 3));
    }
}

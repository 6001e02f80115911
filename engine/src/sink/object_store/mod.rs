//! `type = "object-store"`: one object per batch in S3-compatible storage,
//! the modern place of Spark's `saveAsTextFiles` to HDFS.
//!
//! The client is the `object_store` crate (the Apache Arrow project's, used
//! by DataFusion, Delta Lake's and Iceberg's Rust readers, and InfluxDB):
//! one API over S3 and its compatibles (MinIO, Ceph, R2, moto), Google Cloud
//! Storage and Azure Blob Storage, with its own request signing and retries.
//! Only its S3 part is built and tested here (against moto's S3 server);
//! GCS and Azure are one feature flag of the crate away but untested, and it
//! does not reach HDFS (an HDFS cluster's S3 gateway, or Ozone's, does).
//!
//! **Names.** `<prefix>/<partition>/<pipeline>-<batch time ms>-<batch
//! id>.<jsonl|txt>`, where `<partition>` is the `partition` template filled
//! in from the batch time (UTC), e.g. `dt=2026-12-02/hour=05`. An S3 PUT is
//! atomic: an object is there whole or not at all.
//!
//! **Exactly-once.** Under `delivery = "exactly-once"` a batch's object is
//! first written under `<prefix>/_sluice_staging/<pipeline>/<checkpoint>/…`
//! (a name lakehouse readers skip: it starts with `_`) and copied to its
//! place, then deleted, only once the checkpoint covering it is durable. At
//! start, staged objects the last checkpoint covers are copied into place
//! (the crash came between checkpoint and copy) and later ones deleted
//! (their batches are replayed), as the directory sink does with its files.
//! Readers listing the prefix see each batch's object once, never a partial
//! one. Under at-least-once the object is written in place at once, and a
//! replayed batch is a second object.

#[cfg(feature = "parquet")]
mod parquet;

use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use super::net::{Attempt, retry, runtime};
use super::template::Template;
use super::{BatchMeta, Format, Sink, SinkContext, SinkError, format};
use crate::batch::Records;
use crate::failpoint::{self, Point};
use crate::units::HumanDuration;

/// The folder, under the prefix, of objects waiting for their checkpoint.
const STAGING: &str = "_sluice_staging";

/// Writes each batch as an object.
///
/// ```toml
/// [[sinks]]
/// type = "object-store"
/// url = "s3://bucket/some/prefix"
/// endpoint = "http://127.0.0.1:5000"   # S3-compatible servers
/// format = "jsonl"
/// partition = "dt=%Y-%m-%d/hour=%H"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket` or `s3://bucket/prefix`. Credentials and region come
    /// from the standard `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`), never from this file.
    pub url: String,
    /// The server, for S3-compatible stores (`http://127.0.0.1:5000`);
    /// default: AWS itself (or `AWS_ENDPOINT`). Requests go path-style.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region when `AWS_REGION` does not say; default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// `"jsonl"` (default, the directory sink's lines), `"text"`, or
    /// `"parquet"` (columns `key`, `value`, `timestamp`; needs the
    /// `parquet` feature, on by default).
    #[serde(default)]
    pub format: ObjectFormat,
    /// A path template between the prefix and the object's name, filled in
    /// from the batch time (UTC): `%Y`, `%m`, `%d`, `%H`, `%M`, e.g.
    /// `"dt=%Y-%m-%d/hour=%H"`. Default: none.
    #[serde(default)]
    pub partition: Option<String>,
    /// How long a batch is retried while the store is unreachable or
    /// answers with a server error before the pipeline fails. Default:
    /// until it takes it.
    #[serde(default)]
    pub give_up_after: Option<HumanDuration>,
    /// Longest wait for one request; default `"30s"`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// An object's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectFormat {
    /// JSON lines, as the directory sink writes them.
    #[default]
    Jsonl,
    /// Values (or `key<TAB>value`) as lines.
    Text,
    /// One Parquet file per object.
    Parquet,
}

impl ObjectStoreConfig {
    /// Bucket and prefix (without slashes at either end).
    fn bucket_prefix(&self) -> Result<(String, String), String> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            format!(
                "object-store sink: invalid `url` `{}`: expected s3://bucket or s3://bucket/prefix",
                self.url
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "object-store sink: `url` `{}` names no bucket",
                self.url
            ));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.format == ObjectFormat::Parquet && !cfg!(feature = "parquet") {
            return Err(
                "object-store sink: `format = \"parquet\"`: this sluice was built without \
                        the `parquet` feature; build with `--features parquet`"
                    .into(),
            );
        }
        let (_, prefix) = self.bucket_prefix()?;
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!(
                "object-store sink: `url` `{}`: the prefix may not hold `.` or `..` parts",
                self.url
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "object-store sink: invalid `endpoint` `{endpoint}`: expected http://host:port or https://…"
            ));
        }
        if let Some(partition) = &self.partition {
            Template::parse(partition)
                .map_err(|e| format!("object-store sink: invalid `partition` {e}"))?;
            if partition.starts_with('/') || partition.split('/').any(|p| p == ".." || p == ".") {
                return Err(format!(
                    "object-store sink: invalid `partition` `{partition}`: a relative path without `.` or `..` parts"
                ));
            }
        }
        Ok(())
    }
}

/// The running sink.
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    prefix: String,
    partition: Option<Template>,
    format: ObjectFormat,
    pipeline: String,
    staged: bool,
    give_up_after: Option<std::time::Duration>,
    who: String,
    buffer: Vec<u8>,
}

impl ObjectStoreSink {
    /// Sets up the client (no request yet).
    pub fn new(c: &ObjectStoreConfig, cx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let who = format!("object-store {}", c.url);
        let error = |message: String| SinkError {
            sink: who.clone(),
            message,
        };
        let (bucket, prefix) = c.bucket_prefix().map_err(error)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region(c.region.as_deref().unwrap_or("us-east-1"));
        } else if let Some(region) = &c.region {
            builder = builder.with_region(region);
        }
        let timeout = c
            .timeout
            .map_or(std::time::Duration::from_secs(30), |t| t.0);
        let mut options = ClientOptions::new().with_timeout(timeout);
        if let Some(endpoint) = &c.endpoint {
            builder = builder.with_endpoint(endpoint);
            // Plain HTTP only to a server the file names with `http://`.
            options = options.with_allow_http(endpoint.starts_with("http://"));
        }
        builder = builder
            .with_client_options(options)
            // Few quick retries of its own: the sink's loop waits out a
            // longer outage, and says so.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(10),
                ..RetryConfig::default()
            });
        let store = builder
            .build()
            .map_err(|e| error(format!("cannot set up the S3 client: {e}")))?;
        let runtime = runtime().map_err(|e| error(format!("cannot start its runtime: {e}")))?;
        Ok(ObjectStoreSink {
            store: Arc::new(store),
            runtime,
            prefix,
            partition: c
                .partition
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(error)?,
            format: c.format,
            pipeline: cx.pipeline.to_string(),
            staged: cx.exactly_once,
            give_up_after: c.give_up_after.map(|d| d.0),
            who,
            buffer: Vec::new(),
        })
    }

    /// `prefix/rest`, or `rest` without a prefix.
    fn under_prefix(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// A batch's object, relative to the prefix.
    fn relative_name(&self, batch: &BatchMeta<'_>) -> String {
        let extension = match self.format {
            ObjectFormat::Jsonl => "jsonl",
            ObjectFormat::Text => "txt",
            ObjectFormat::Parquet => "parquet",
        };
        let name = format!(
            "{}-{}-{:06}.{extension}",
            batch.pipeline, batch.time_ms, batch.id
        );
        match &self.partition {
            Some(t) => format!("{}/{name}", t.render(batch.time_ms).trim_matches('/')),
            None => name,
        }
    }

    /// The staging folder of this pipeline.
    fn staging(&self) -> String {
        self.under_prefix(&format!("{STAGING}/{}", self.pipeline))
    }

    fn staged_name(&self, checkpoint: u64, relative: &str) -> String {
        format!("{}/{checkpoint:020}/{relative}", self.staging())
    }

    /// Runs one store operation until it goes through.
    fn retry<T>(
        &self,
        what: &str,
        op: impl Fn(
            Arc<dyn ObjectStore>,
        ) -> futures_util::future::BoxFuture<'static, object_store::Result<T>>,
    ) -> Result<T, SinkError> {
        retry(&self.who, self.give_up_after, what, || {
            match self.runtime.block_on(op(self.store.clone())) {
                Ok(value) => Attempt::Done(value),
                Err(e) => classify(e),
            }
        })
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), SinkError> {
        let path = ObjectPath::from(name);
        let payload = bytes::Bytes::copy_from_slice(bytes);
        self.retry(&format!("PUT {name}"), move |store| {
            let (path, payload) = (path.clone(), payload.clone());
            Box::pin(async move { store.put(&path, payload.into()).await.map(|_| ()) })
        })
    }

    /// Copies a staged object into place and deletes the staged one.
    fn publish(&self, staged: &str, name: &str) -> Result<(), SinkError> {
        let (from, to) = (ObjectPath::from(staged), ObjectPath::from(name));
        self.retry(&format!("copying {staged} to {name}"), move |store| {
            let (from, to) = (from.clone(), to.clone());
            Box::pin(async move { store.copy(&from, &to).await })
        })?;
        self.delete(staged)
    }

    fn delete(&self, name: &str) -> Result<(), SinkError> {
        let path = ObjectPath::from(name);
        self.retry(&format!("DELETE {name}"), move |store| {
            let path = path.clone();
            Box::pin(async move {
                match store.delete(&path).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other,
                }
            })
        })
    }

    /// Every object under the staging folder.
    fn list_staged(&self) -> Result<Vec<String>, SinkError> {
        let prefix = ObjectPath::from(self.staging());
        self.retry("listing staged objects", move |store| {
            let prefix = prefix.clone();
            Box::pin(async move {
                let mut names = Vec::new();
                let mut list = store.list(Some(&prefix));
                while let Some(meta) = list.next().await {
                    names.push(meta?.location.to_string());
                }
                Ok(names)
            })
        })
    }
}

/// Whether a store error is worth another try: yes for the server
/// unreachable or failing, and for a missing bucket (waited for, as the
/// Kafka sink waits for a topic, and logged each time); no for a missing
/// object or a refusal (bad credentials).
fn classify<T>(e: object_store::Error) -> Attempt<T> {
    // Its `Display` already names the causes.
    let text = e.to_string();
    if text.contains("NoSuchBucket") {
        return Attempt::Retry(format!("no such bucket: {text}"));
    }
    let refused = matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented
    ) || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch");
    if refused {
        Attempt::Fail(text)
    } else {
        Attempt::Retry(text)
    }
}

impl Sink for ObjectStoreSink {
    fn write(&mut self, batch: BatchMeta<'_>, records: &Records) -> Result<(), SinkError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        match self.format {
            ObjectFormat::Jsonl | ObjectFormat::Text => {
                let format = if self.format == ObjectFormat::Jsonl {
                    Format::Jsonl
                } else {
                    Format::Text
                };
                for record in records.iter() {
                    format::write(&mut buffer, format, record);
                }
            }
            #[cfg(feature = "parquet")]
            ObjectFormat::Parquet => {
                buffer = parquet::encode(records).map_err(|e| SinkError {
                    sink: self.who.clone(),
                    message: e,
                })?;
            }
            #[cfg(not(feature = "parquet"))]
            ObjectFormat::Parquet => unreachable!("refused when the file was checked"),
        }
        let relative = self.relative_name(&batch);
        let name = match batch.checkpoint.filter(|_| self.staged) {
            Some(checkpoint) => self.staged_name(checkpoint, &relative),
            None => self.under_prefix(&relative),
        };
        let result = self.put(&name, &buffer);
        self.buffer = buffer;
        result
    }

    fn commit(&mut self, batch: BatchMeta<'_>) -> Result<(), SinkError> {
        let Some(checkpoint) = batch.checkpoint.filter(|_| self.staged) else {
            return Ok(());
        };
        let relative = self.relative_name(&batch);
        failpoint::reached(Point::Renaming);
        self.publish(
            &self.staged_name(checkpoint, &relative),
            &self.under_prefix(&relative),
        )
    }

    fn recover(&mut self, checkpoint: u64, _: Option<Records>) -> Result<(), SinkError> {
        let staging = format!("{}/", self.staging());
        let (mut published, mut dropped) = (0, 0);
        let mut staged = self.list_staged()?;
        staged.sort();
        for name in staged {
            let Some((number, relative)) = name
                .strip_prefix(&staging)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(n, rel)| Some((n.parse::<u64>().ok()?, rel.to_string())))
            else {
                tracing::warn!(
                    "{}: {name} is in the staging folder but not named as the engine names staged objects; left alone",
                    self.who
                );
                continue;
            };
            if number <= checkpoint {
                self.publish(&name, &self.under_prefix(&relative))?;
                published += 1;
            } else {
                self.delete(&name)?;
                dropped += 1;
            }
        }
        if published + dropped > 0 {
            tracing::info!(
                "{}: {published} object(s) of checkpointed batches published, {dropped} staged \
                 after the last checkpoint deleted (their batches are replayed)",
                self.who
            );
        }
        Ok(())
    }
}

//! The service's catalogue: tenants (with their token hashes and quotas),
//! plugins by name and digest, and pipeline definitions with whether each
//! should be running — in one embedded redb file, `DIR/catalog.redb`, so
//! a restart (clean or not) knows what to bring back. Values are JSON;
//! keys are `tenant` or `tenant/name`. Plugin bytes and pipeline state
//! live in files beside it (see `service`), not here.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::tenant::Quotas;

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
const PIPELINES: TableDefinition<&str, &[u8]> = TableDefinition::new("pipelines");

/// A tenant as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    /// SHA-256 of its token, hex.
    pub token_sha256: String,
    /// Its quotas.
    pub quotas: Quotas,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
}

/// One stored version of a plugin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginVersion {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// When it was uploaded, ms since the epoch.
    pub uploaded_ms: u64,
}

/// A plugin's versions, oldest first (the last is what its name means).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Versions, oldest first.
    pub versions: Vec<PluginVersion>,
}

/// Whether a pipeline should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Run it, and again after a restart.
    Running,
    /// Keep it stopped.
    Stopped,
}

/// A pipeline as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// The pipeline file's text, as applied.
    pub text: String,
    /// Whether it should run.
    pub desired: Desired,
    /// The plugin version (digest) each stage runs, by stage name: what
    /// its file named when applied, or a version deployed since.
    pub pins: std::collections::BTreeMap<String, String>,
    /// When it was last applied, ms since the epoch.
    pub updated_ms: u64,
}

/// A catalogue could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("catalogue {path}: {message}")]
pub struct CatalogError {
    path: String,
    message: String,
}

/// The catalogue file.
pub struct Catalog {
    db: Database,
    path: String,
}

impl Catalog {
    /// Opens (or creates) the catalogue in `dir`.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join("catalog.redb");
        let shown = path.display().to_string();
        let db = Database::create(&path).map_err(|e| CatalogError {
            path: shown.clone(),
            message: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "in use by another process: is another sluice serve using this --data folder?"
                        .to_string()
                }
                other => other.to_string(),
            },
        })?;
        let catalog = Catalog { db, path: shown };
        // Every table exists from the start, so reads never meet a missing one.
        let txn = catalog.db.begin_write().map_err(|e| catalog.error(e))?;
        for table in [TENANTS, PLUGINS, PIPELINES] {
            txn.open_table(table).map_err(|e| catalog.error(e))?;
        }
        txn.commit().map_err(|e| catalog.error(e))?;
        Ok(catalog)
    }

    fn error(&self, e: impl std::fmt::Display) -> CatalogError {
        CatalogError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, CatalogError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(table).map_err(|e| self.error(e))?;
        let Some(value) = table.get(key).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| self.error(format!("entry `{key}` is damaged: {e}")))
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(table).map_err(|e| self.error(e))?;
            match value {
                Some(value) => {
                    let bytes = serde_json::to_vec(value).map_err(|e| self.error(e))?;
                    table
                        .insert(key, bytes.as_slice())
                        .map_err(|e| self.error(e))?;
                }
                None => {
                    table.remove(key).map_err(|e| self.error(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order.
    fn scan<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, CatalogError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(table).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let key = key.value().to_string();
            if !key.starts_with(prefix) {
                break;
            }
            let value = serde_json::from_slice(value.value())
                .map_err(|e| self.error(format!("entry `{key}` is damaged: {e}")))?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// A tenant.
    pub fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, CatalogError> {
        self.get(TENANTS, name)
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> Result<Vec<(String, TenantRecord)>, CatalogError> {
        self.scan(TENANTS, "")
    }

    /// Stores (or, with `None`, removes) a tenant.
    pub fn set_tenant(
        &self,
        name: &str,
        record: Option<&TenantRecord>,
    ) -> Result<(), CatalogError> {
        self.put(TENANTS, name, record)
    }

    /// A tenant's plugin.
    pub fn plugin(&self, tenant: &str, name: &str) -> Result<Option<PluginRecord>, CatalogError> {
        self.get(PLUGINS, &format!("{tenant}/{name}"))
    }

    /// A tenant's plugins, by name.
    pub fn plugins(&self, tenant: &str) -> Result<Vec<(String, PluginRecord)>, CatalogError> {
        let prefix = format!("{tenant}/");
        Ok(self
            .scan(PLUGINS, &prefix)?
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect())
    }

    /// Stores (or removes) a tenant's plugin.
    pub fn set_plugin(
        &self,
        tenant: &str,
        name: &str,
        record: Option<&PluginRecord>,
    ) -> Result<(), CatalogError> {
        self.put(PLUGINS, &format!("{tenant}/{name}"), record)
    }

    /// A tenant's pipeline.
    pub fn pipeline(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PipelineRecord>, CatalogError> {
        self.get(PIPELINES, &format!("{tenant}/{name}"))
    }

    /// A tenant's pipelines, by name.
    pub fn pipelines(&self, tenant: &str) -> Result<Vec<(String, PipelineRecord)>, CatalogError> {
        let prefix = format!("{tenant}/");
        Ok(self
            .scan(PIPELINES, &prefix)?
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect())
    }

    /// Stores (or removes) a tenant's pipeline.
    pub fn set_pipeline(
        &self,
        tenant: &str,
        name: &str,
        record: Option<&PipelineRecord>,
    ) -> Result<(), CatalogError> {
        self.put(PIPELINES, &format!("{tenant}/{name}"), record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_tenants_do_not_see_each_others() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.set_tenant(
                "acme",
                Some(&TenantRecord {
                    token_sha256: "ab".into(),
                    quotas: Quotas::default(),
                    created_ms: 1,
                }),
            )
            .unwrap();
            let record = PipelineRecord {
                text: "name = \"p\"".into(),
                desired: Desired::Running,
                pins: Default::default(),
                updated_ms: 2,
            };
            c.set_pipeline("acme", "p", Some(&record)).unwrap();
            c.set_pipeline("acme-2", "q", Some(&record)).unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.tenant("acme").unwrap().unwrap().token_sha256, "ab");
        let names: Vec<String> = c
            .pipelines("acme")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["p"], "`acme-2/q` is not acme's");
        c.set_pipeline("acme", "p", None).unwrap();
        assert!(c.pipeline("acme", "p").unwrap().is_none());
    }
}

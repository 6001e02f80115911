//! `sluice plugin inspect`: what a component file imports and exports, and
//! whether it implements the Sluice world, without running it.

use std::path::Path;

use super::{LoadError, PluginHost, check_header, content_hash};

/// What a component declares.
#[derive(Debug)]
pub struct Inspection {
    /// File size in bytes.
    pub size: u64,
    /// Content hash.
    pub hash: String,
    /// Imported interfaces and functions.
    pub imports: Vec<String>,
    /// Exported interfaces and functions.
    pub exports: Vec<String>,
    /// `Ok` when the engine can run it as a stage; otherwise why not.
    pub verdict: Result<(), String>,
}

/// Reads a component and lists its imports and exports.
pub fn inspect(host: &PluginHost, path: &Path) -> Result<Inspection, LoadError> {
    let bytes = super::read_plugin(path)?;
    check_header(path, &bytes)?;
    let hash = content_hash(&bytes);
    let component = host.compile(path, &bytes, &hash)?;
    let ty = component.component_type();
    let imports = ty
        .imports(host.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(host.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let verdict = host
        .link(path, hash.clone(), component)
        .map(|_| ())
        .map_err(|e| e.to_string());
    Ok(Inspection {
        size: bytes.len() as u64,
        hash,
        imports,
        exports,
        verdict,
    })
}

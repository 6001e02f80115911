//! Pipeline files: parsing the TOML with the span of every value
//! ([`file`]), resolving it into plain types with paths resolved against a
//! folder or a tenant's root ([`spec`]), and what can be checked of the
//! folders before running ([`checks`]). Every problem names the file, line
//! and column. What each source, stage and sink does with its settings
//! belongs to those modules, which own their `…Config` types.

pub mod checks;
mod file;
mod spec;

pub use crate::units::{ByteSize, HumanDuration};
pub use file::{
    ConfigError, Delivery, MAX_NAME, MAX_STAGES, PipelineConfig, PipelineFile, Tasks, check_name,
};
pub use spec::{Base, FolderBase, Located, LocatedStage, Location, PipelineSpec};

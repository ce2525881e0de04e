//! Manifests: YAML/JSON files → typed Kubernetes objects, validated and defaulted.
//!
//! Every error names the file, the line and column, the field path and the fix. Parsing never
//! panics, whatever the input (see the property test in `tests/manifest_fuzz.rs`).

mod defaults;
mod desired;
mod error;
mod locate;
mod parse;
mod uid;
mod validate;

pub use desired::{DesiredPod, DesiredState, ObjectKey};
pub use error::ManifestError;
pub use parse::{parse_bytes, parse_file, parse_str, Document, Object, MAX_FILE_BYTES};

/// Whether a directory entry is a manifest the agent reads: `*.yaml`, `*.yml` or `*.json`,
/// not hidden. Editor temp files (`.x.swp`, `x~`, `#x#`) fail this by name or extension.
pub fn is_manifest_file(path: &std::path::Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.')
        && !name.starts_with('#')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

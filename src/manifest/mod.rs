//! Manifests: YAML/JSON files → typed Kubernetes objects, validated and defaulted.
//!
//! Every error names the file, the line and column, the field path and the fix. Parsing never
//! panics, whatever the input (see the property test in `tests/manifest/fuzz.rs`).

mod defaults;
mod depth;
mod desired;
mod error;
mod locate;
mod parse;
mod uid;
mod validate;

pub use desired::{DesiredPod, DesiredState, ObjectKey, References};
pub use error::ManifestError;
pub use parse::{
    parse_bytes, parse_file, parse_str, pod_from_json, Document, Object, MAX_FILE_BYTES,
};
pub use uid::CONFIG_SOURCE;
pub(crate) use validate::{is_label_value, is_qualified_name};
pub use validate::{registry_credentials_key, LINUX_CAPABILITIES};

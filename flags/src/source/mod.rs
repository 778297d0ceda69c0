//! Where flags live: a JSON file (LaunchDarkly's `{"flags": {...}}` shape) or a MySQL table shared
//! by every proxy replica, both polled and swapped in atomically; or LaunchDarkly itself.

pub mod file;
pub mod launchdarkly;
pub mod mysql;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::FlagError;
use crate::model::Flag;
use crate::store::FlagSet;

/// The document of a flag file: `{"flags": {"<key>": <flag>}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagDocument {
    pub flags: HashMap<String, Flag>,
    /// LaunchDarkly's put data also carries segments; accepted and ignored.
    #[serde(default, skip_serializing)]
    pub segments: Option<serde_json::Value>,
}

/// Parses and validates a flag document; errors name the field path, line and column.
pub fn parse_document(source_name: &str, text: &str) -> Result<FlagSet, FlagError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let doc: FlagDocument = serde_path_to_error::deserialize(de).map_err(|e| FlagError::Parse {
        source_name: source_name.to_string(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    for (key, flag) in &doc.flags {
        if *key != flag.key {
            return Err(FlagError::Invalid {
                key: key.clone(),
                message: format!(
                    "is stored under `{key}` but its key field says `{}`",
                    flag.key
                ),
            });
        }
    }
    FlagSet::new(doc.flags.into_values())
}

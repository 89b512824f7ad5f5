//! Item identifiers: random, shown as hex, found by any unique prefix.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::{InvalidInput, ModelError};

/// The number of hex digits shown for an id in tables.
pub const SHORT_ID_LEN: usize = 6;

/// The id of an issue, step or agreement: 64 random bits as 16 hex digits.
///
/// Ids are random rather than sequential so that two devices adding items
/// offline never pick the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(String);

impl ItemId {
    /// Makes an id from eight random bytes (the caller supplies randomness, so the
    /// model stays deterministic under test).
    pub fn from_random(bytes: [u8; 8]) -> ItemId {
        ItemId(hex::encode(bytes))
    }

    /// Accepts an id read from the document: hex digits only.
    pub(crate) fn from_stored(s: &str) -> Option<ItemId> {
        (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| ItemId(s.to_ascii_lowercase()))
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first few digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(SHORT_ID_LEN)]
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ItemId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Finds the one id among `ids` that starts with `prefix`, as git does.
pub fn resolve_prefix<'a, I>(what: &'static str, prefix: &str, ids: I) -> Result<ItemId, ModelError>
where
    I: IntoIterator<Item = &'a ItemId>,
{
    let p = prefix.trim().to_ascii_lowercase();
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidInput::Id(prefix.to_string()).into());
    }
    let mut found: Vec<&ItemId> = ids.into_iter().filter(|id| id.0.starts_with(&p)).collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [] => Err(ModelError::NotFound {
            what,
            prefix: prefix.to_string(),
        }),
        [one] => Ok((*one).clone()),
        many => Err(ModelError::Ambiguous {
            what,
            prefix: prefix.to_string(),
            candidates: many
                .iter()
                .map(|id| id.0[..p.len() + 2.min(id.0.len() - p.len())].to_string())
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ItemId {
        ItemId::from_stored(s).unwrap()
    }

    #[test]
    fn prefixes() {
        let ids = [id("abc123"), id("abd456"), id("ffff00")];
        assert_eq!(resolve_prefix("issue", "abc", &ids).unwrap(), ids[0]);
        assert_eq!(resolve_prefix("issue", "F", &ids).unwrap(), ids[2]);
        assert!(matches!(
            resolve_prefix("issue", "ab", &ids),
            Err(ModelError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve_prefix("issue", "0", &ids),
            Err(ModelError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_prefix("issue", "xyz", &ids),
            Err(ModelError::Invalid(InvalidInput::Id(_)))
        ));
        assert!(matches!(
            resolve_prefix("issue", "", &ids),
            Err(ModelError::Invalid(InvalidInput::Id(_)))
        ));
    }

    #[test]
    fn stored_ids_are_checked() {
        assert!(ItemId::from_stored("zz").is_none());
        assert!(ItemId::from_stored("").is_none());
        assert_eq!(ItemId::from_random([0xab; 8]).short(), "ababab");
    }
}

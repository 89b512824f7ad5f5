//! Concurrent edits shown, not hidden.
//!
//! When two devices set the same field concurrently, automerge keeps every value
//! and picks a winner deterministically. duet shows the winner as the field's
//! value and lists every value with who set it, until a partner sets the field
//! again (which overwrites all of them).

use std::fmt;

use automerge::{ObjId, ReadDoc, ScalarValue};
use serde::{Serialize, Serializer};

use crate::access;
use crate::space::{Person, author_of_actor};

/// One field that holds more than one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The field's name, as in the JSON output ("status", "title", ...).
    pub field: String,
    /// Every value, the one shown first.
    pub values: Vec<ConflictValue>,
}

/// A value of a conflicting field and who set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictValue {
    /// The value, as text.
    pub value: String,
    /// The partner whose device set it.
    pub set_by: Person,
}

/// A point in time, stored as milliseconds since the epoch and shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(pub i64);

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(ts) => write!(f, "{}", ts.round(jiff::Unit::Second).unwrap_or(ts)),
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Moment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Renders a stored scalar for display.
pub(crate) fn render(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Str(s) => s.to_string(),
        ScalarValue::Null => "(none)".to_string(),
        other => access::scalar_int(other)
            .map(|i| i.to_string())
            .unwrap_or_else(|| other.to_string()),
    }
}

/// The conflict at `obj[key]`, if devices set different values concurrently.
pub(crate) fn scalar_conflict(doc: &impl ReadDoc, obj: &ObjId, key: &str, field: &str) -> Option<Conflict> {
    values_conflict(doc, field, access::all_scalars(doc, obj, key))
}

/// A conflict among values gathered from one or several objects.
pub(crate) fn values_conflict(
    doc: &impl ReadDoc,
    field: &str,
    values: Vec<access::SetValue>,
) -> Option<Conflict> {
    // Most fields hold one value: decide that before looking up any author,
    // which reads the membership.
    let first = render(&values.first()?.value);
    if values.iter().all(|v| render(&v.value) == first) {
        return None;
    }
    let mut shown: Vec<ConflictValue> = Vec::new();
    for v in values {
        let value = render(&v.value);
        let set_by = author_of_actor(doc, v.actor.as_ref());
        if !shown.iter().any(|s| s.value == value && s.set_by == set_by) {
            shown.push(ConflictValue { value, set_by });
        }
    }
    Some(Conflict {
        field: field.to_string(),
        values: shown,
    })
}

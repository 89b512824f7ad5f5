//! Agreements: boundaries, conflict rules and rituals. An agreement is active once
//! both partners have accepted its current version; editing the text makes a new
//! version that both accept again.
//!
//! Layout: `agreements[id]` is a map with `text`, `kind`, `version` (from 1),
//! `accepted` (a map from seat to the version that partner accepted),
//! `created_by` and `created_at`.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::Serialize;

use crate::access;
use crate::conflict::{Conflict, Moment, scalar_conflict};
use crate::error::ModelError;
use crate::ids::{ItemId, resolve_prefix};
use crate::space::{Editor, Person, map_in, person};
use crate::text::required_text;
use crate::vocab::{AgreementKind, Seat};

/// An agreement as read from the document.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// Its id.
    pub id: ItemId,
    /// Its current text.
    pub text: String,
    /// Its kind.
    pub kind: AgreementKind,
    /// Its current version, from 1.
    pub version: u64,
    /// Which partners accepted which version.
    pub accepted: Vec<Acceptance>,
    /// True when both partners accepted the current version.
    pub active: bool,
    /// Who proposed it.
    pub created_by: Person,
    /// When.
    pub created_at: Moment,
    /// Fields with concurrent, different values.
    pub conflicts: Vec<Conflict>,
}

/// A partner's acceptance of a version.
#[derive(Debug, Clone, Serialize)]
pub struct Acceptance {
    /// Who.
    pub partner: Person,
    /// The version they accepted.
    pub version: u64,
}

fn agreement_obj(doc: &impl ReadDoc, id: &ItemId) -> Option<ObjId> {
    access::item(doc, "agreements", id)
}

fn agreement_ids(doc: &impl ReadDoc) -> Vec<ItemId> {
    access::item_ids(doc, "agreements")
}

/// The agreement's current state and its map object, for an edit.
fn target(doc: &impl ReadDoc, id: &ItemId) -> Result<(Agreement, ObjId), ModelError> {
    agreement(doc, id)
        .zip(agreement_obj(doc, id))
        .ok_or_else(|| ModelError::NotFound {
            what: "agreement",
            prefix: id.to_string(),
        })
}

/// Finds the agreement whose id starts with `prefix`.
pub fn resolve_agreement(doc: &impl ReadDoc, prefix: &str) -> Result<ItemId, ModelError> {
    resolve_prefix("agreement", prefix, &agreement_ids(doc))
}

/// Reads every agreement, oldest first.
pub fn agreements(doc: &impl ReadDoc) -> Vec<Agreement> {
    let mut out: Vec<Agreement> = agreement_ids(doc)
        .iter()
        .filter_map(|id| agreement(doc, id))
        .collect();
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    out
}

/// Reads agreement `id`.
pub fn agreement(doc: &impl ReadDoc, id: &ItemId) -> Option<Agreement> {
    let obj = agreement_obj(doc, id)?;
    let text = access::string(doc, &obj, "text")?;
    let version = access::int(doc, &obj, "version")
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(1);
    let accepted: Vec<Acceptance> = access::object(doc, &obj, "accepted", ObjType::Map)
        .map(|m| {
            Seat::ALL
                .iter()
                .filter_map(|&seat| {
                    let v = access::int(doc, &m, seat.as_str())?;
                    Some(Acceptance {
                        partner: person(doc, seat),
                        version: u64::try_from(v).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let active = Seat::ALL.iter().all(|s| {
        accepted
            .iter()
            .any(|a| a.partner.seat == Some(*s) && a.version == version)
    });
    let conflicts = [("text", "text"), ("kind", "kind"), ("version", "version")]
        .iter()
        .filter_map(|(k, f)| scalar_conflict(doc, &obj, k, f))
        .collect();
    Some(Agreement {
        id: id.clone(),
        text,
        kind: access::string(doc, &obj, "kind")
            .and_then(|k| k.parse().ok())
            .unwrap_or(AgreementKind::Boundary),
        version,
        accepted,
        active,
        created_by: match access::string(doc, &obj, "created_by").and_then(|s| s.parse().ok()) {
            Some(seat) => person(doc, seat),
            None => Person {
                seat: None,
                name: "unknown".into(),
            },
        },
        created_at: Moment(access::int(doc, &obj, "created_at").unwrap_or(0)),
        conflicts,
    })
}

impl Editor<'_> {
    /// Proposes an agreement; the proposer accepts version 1 at once.
    pub fn add_agreement(&mut self, id: &ItemId, text: &str, kind: AgreementKind) -> Result<(), ModelError> {
        let text = required_text("agreement", text)?;
        self.change(format!("add agreement {}", id.short()), |tx, seat, now| {
            let all = map_in(tx, &ROOT, "agreements")?;
            let obj = tx.put_object(&all, id.as_str(), ObjType::Map)?;
            tx.put(&obj, "text", text)?;
            tx.put(&obj, "kind", kind.as_str())?;
            tx.put(&obj, "version", ScalarValue::Int(1))?;
            let accepted = tx.put_object(&obj, "accepted", ObjType::Map)?;
            tx.put(&accepted, seat.as_str(), ScalarValue::Int(1))?;
            tx.put(&obj, "created_by", seat.as_str())?;
            tx.put(&obj, "created_at", ScalarValue::Timestamp(now))?;
            Ok(())
        })
    }

    /// Accepts the current version of an agreement.
    pub fn accept_agreement(&mut self, id: &ItemId) -> Result<u64, ModelError> {
        self.change(format!("accept agreement {}", id.short()), |tx, seat, _| {
            let (current, obj) = target(&*tx, id)?;
            let accepted = map_in(tx, &obj, "accepted")?;
            tx.put(&accepted, seat.as_str(), ScalarValue::Int(current.version as i64))?;
            Ok(current.version)
        })
    }

    /// Rewrites an agreement's text as a new version, which the editor accepts.
    pub fn edit_agreement(&mut self, id: &ItemId, text: &str) -> Result<u64, ModelError> {
        let text = required_text("agreement", text)?;
        self.change(format!("edit agreement {}", id.short()), |tx, seat, _| {
            let (current, obj) = target(&*tx, id)?;
            let version = current.version + 1;
            tx.put(&obj, "text", text)?;
            tx.put(&obj, "version", ScalarValue::Int(version as i64))?;
            let accepted = map_in(tx, &obj, "accepted")?;
            tx.put(&accepted, seat.as_str(), ScalarValue::Int(version as i64))?;
            Ok(version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::tests::founded;

    #[test]
    fn an_agreement_is_active_once_both_accept_the_current_version() {
        let (mut doc, _) = founded(1);
        let id = ItemId::from_random([4; 8]);
        Editor::new(&mut doc, Seat::A, 1)
            .add_agreement(&id, "No phones at dinner", AgreementKind::Ritual)
            .unwrap();
        assert!(!agreement(&doc, &id).unwrap().active);
        Editor::new(&mut doc, Seat::B, 2).accept_agreement(&id).unwrap();
        assert!(agreement(&doc, &id).unwrap().active);
        assert_eq!(
            Editor::new(&mut doc, Seat::B, 3)
                .edit_agreement(&id, "No phones at meals")
                .unwrap(),
            2
        );
        let a = agreement(&doc, &id).unwrap();
        assert!(!a.active, "a new version needs both again");
        assert_eq!(a.text, "No phones at meals");
        Editor::new(&mut doc, Seat::A, 4).accept_agreement(&id).unwrap();
        assert!(agreement(&doc, &id).unwrap().active);
        assert_eq!(resolve_agreement(&doc, "0404").unwrap(), id);
        assert_eq!(agreements(&doc).len(), 1);
    }
}

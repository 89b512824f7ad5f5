//! The space: the root of the couple document, its schema version, the two
//! partners and their devices, and the [`Editor`] through which every change is
//! made.

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::Serialize;

use crate::access;
use crate::error::{InvalidInput, ModelError};
use crate::identity::DeviceId;
use crate::members::{Member, Membership};
use crate::text::check_text;
use crate::vocab::{Owner, Seat};

/// The schema version this build writes. A document with a higher one is refused;
/// a lower one is migrated on open.
pub const SCHEMA_VERSION: u64 = 1;

/// The top-level collections of a space.
pub(crate) const COLLECTIONS: [&str; 5] = ["partners", "devices", "issues", "checkins", "agreements"];

/// A partner as shown to people: their seat and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// The seat, or `None` for a change made by a device the space does not know.
    pub seat: Option<Seat>,
    /// The name the partner gave, or a placeholder.
    pub name: String,
}

/// The first device of a new space and the partner it belongs to.
#[derive(Debug, Clone)]
pub struct Founder {
    /// The random id of the space (hex).
    pub space_id: String,
    /// The founding partner's name.
    pub name: String,
    /// The founding device.
    pub device: DeviceId,
    /// The device's name.
    pub device_name: String,
}

/// What opening a document found about its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheck {
    /// Current: nothing to do.
    Current,
    /// Older: run [`Editor::migrate`].
    Older(u64),
}

/// Checks that `doc` is a couple space this build can read.
pub fn check_schema(doc: &Automerge) -> Result<SchemaCheck, ModelError> {
    let Some(found) = access::scalar(doc, &ROOT, "schema").and_then(|s| access::scalar_int(&s)) else {
        return Err(ModelError::NotASpace("the document has no schema version"));
    };
    let found = u64::try_from(found).map_err(|_| ModelError::NotASpace("negative schema version"))?;
    if found > SCHEMA_VERSION {
        Err(ModelError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        })
    } else if found < SCHEMA_VERSION {
        Ok(SchemaCheck::Older(found))
    } else {
        Ok(SchemaCheck::Current)
    }
}

/// The space's random id.
pub fn space_id(doc: &Automerge) -> Option<String> {
    access::string(doc, &ROOT, "space_id")
}

/// The name of the partner in `seat`, if they have joined.
pub fn partner_name(doc: &impl ReadDoc, seat: Seat) -> Option<String> {
    access::collection(doc, "partners")
        .iter()
        .flat_map(|p| access::objects(doc, p, seat.as_str(), ObjType::Map))
        .find_map(|obj| access::string(doc, &obj, "name"))
}

/// The partner in `seat` as shown to people.
pub fn person(doc: &impl ReadDoc, seat: Seat) -> Person {
    Person {
        seat: Some(seat),
        name: partner_name(doc, seat).unwrap_or_else(|| match seat {
            Seat::A => "partner a".to_string(),
            Seat::B => "partner b".to_string(),
        }),
    }
}

/// Both partners as shown to people, read once for a whole typed read (a
/// read of an issue names a partner per note and step; looking the names up
/// each time cost most of such a read).
#[derive(Debug, Clone)]
pub struct People([Person; 2]);

impl People {
    /// Reads both partners.
    pub fn of(doc: &impl ReadDoc) -> People {
        People([person(doc, Seat::A), person(doc, Seat::B)])
    }

    /// The partner in `seat`.
    pub fn get(&self, seat: Seat) -> Person {
        match seat {
            Seat::A => self.0[0].clone(),
            Seat::B => self.0[1].clone(),
        }
    }
}

/// A step owner's name among `people` ("both", or the partner's name).
pub fn owner_name(owner: Owner, people: &[Person]) -> String {
    match owner {
        Owner::Both => "both".to_string(),
        Owner::One(seat) => people
            .iter()
            .find(|p| p.seat == Some(seat))
            .map_or_else(|| seat.to_string(), |p| p.name.clone()),
    }
}

/// The device that began the space's history: the author of its one change
/// without dependencies (`None` for an empty document, or one with several
/// beginnings, which no device accepts). Homes pin it when they make or join
/// a space and judge membership from it from then on.
pub fn founding_device(doc: &Automerge) -> Option<DeviceId> {
    let metas = doc.get_changes_meta(&[]);
    let mut roots = metas.iter().filter(|m| m.deps.is_empty());
    match (roots.next(), roots.next()) {
        (Some(root), None) => DeviceId::from_actor(&root.actor),
        _ => None,
    }
}

/// Every member device of the space (see [`crate::members`]), revoked ones
/// included.
pub fn devices(doc: &impl ReadDoc) -> Vec<Member> {
    Membership::of(doc).members().to_vec()
}

/// The seat of the device that wrote as `actor`.
pub fn seat_of_actor(doc: &impl ReadDoc, actor: &ActorId) -> Option<Seat> {
    devices(doc)
        .into_iter()
        .find(|d| d.id.is_actor(actor))
        .map(|d| d.seat)
}

/// Who wrote as `actor`, as shown to people.
pub fn author_of_actor(doc: &impl ReadDoc, actor: Option<&ActorId>) -> Person {
    match actor.and_then(|a| seat_of_actor(doc, a)) {
        Some(seat) => person(doc, seat),
        None => Person {
            seat: None,
            name: "unknown device".to_string(),
        },
    }
}

/// Makes a new space in an empty document: the schema, the collections, and the
/// founding partner and device, all in one change.
pub fn create(doc: &mut Automerge, founder: &Founder, now_ms: i64) -> Result<(), ModelError> {
    create_with_key(doc, founder, None, now_ms)
}

/// [`create`], with the space's first key (its id, generation and envelopes,
/// see [`crate::keys`]) recorded in the same change.
pub fn create_with_key(
    doc: &mut Automerge,
    founder: &Founder,
    first_key: Option<&crate::keys::KeyEntry>,
    now_ms: i64,
) -> Result<(), ModelError> {
    check_text("name", &founder.name)?;
    if !doc.get_heads().is_empty() {
        return Err(ModelError::Refused("the document is not empty".into()));
    }
    let opts = CommitOptions::default()
        .with_message("create space")
        .with_time(now_ms / 1000);
    doc.transact_with(
        |_| opts,
        |tx| -> Result<(), ModelError> {
            tx.put(ROOT, "schema", ScalarValue::Int(SCHEMA_VERSION as i64))?;
            tx.put(ROOT, "space_id", founder.space_id.as_str())?;
            tx.put(ROOT, "created_at", ScalarValue::Timestamp(now_ms))?;
            for name in COLLECTIONS {
                tx.put_object(ROOT, name, ObjType::Map)?;
            }
            let partners = map_in(tx, &ROOT, "partners")?;
            let a = tx.put_object(&partners, Seat::A.as_str(), ObjType::Map)?;
            tx.put(&a, "name", founder.name.trim())?;
            let devices = map_in(tx, &ROOT, "devices")?;
            put_device(
                tx,
                &devices,
                founder.device,
                Seat::A,
                &founder.device_name,
                now_ms,
            )?;
            if let Some(key) = first_key {
                crate::keys::put_space_key(tx, &key.id, key.generation, &key.envelopes)?;
            }
            Ok(())
        },
    )
    .map(|_| ())
    .map_err(|f| f.error)
}

fn put_device(
    tx: &mut Transaction<'_>,
    devices: &ObjId,
    device: DeviceId,
    seat: Seat,
    name: &str,
    now_ms: i64,
) -> Result<(), ModelError> {
    let d = tx.put_object(devices, device.to_string(), ObjType::Map)?;
    tx.put(&d, "seat", seat.as_str())?;
    tx.put(&d, "name", name)?;
    tx.put(&d, "added_at", ScalarValue::Timestamp(now_ms))?;
    Ok(())
}

/// The winning map at `obj[key]`, created if absent.
pub(crate) fn map_in(tx: &mut Transaction<'_>, obj: &ObjId, key: &str) -> Result<ObjId, ModelError> {
    match access::object(&*tx, obj, key, ObjType::Map) {
        Some(id) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
    }
}

/// Makes changes to a space on behalf of one partner's device.
///
/// Every method is one automerge change (one transaction, committed with a short
/// message naming the operation, never the private text), so a failed method
/// leaves the document as it was.
pub struct Editor<'a> {
    pub(crate) doc: &'a mut Automerge,
    pub(crate) seat: Seat,
    pub(crate) now_ms: i64,
}

impl<'a> Editor<'a> {
    /// An editor writing as `seat` at time `now_ms` (milliseconds since the epoch).
    /// The document's actor must already be the writing device's actor.
    pub fn new(doc: &'a mut Automerge, seat: Seat, now_ms: i64) -> Editor<'a> {
        Editor { doc, seat, now_ms }
    }

    /// Runs `f` as one change with the message `message`.
    pub(crate) fn change<T>(
        &mut self,
        message: String,
        f: impl FnOnce(&mut Transaction<'_>, Seat, i64) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        let (seat, now) = (self.seat, self.now_ms);
        let opts = CommitOptions::default()
            .with_message(message)
            .with_time(now / 1000);
        self.doc
            .transact_with(|_| opts, |tx| f(tx, seat, now))
            .map(|ok| ok.result)
            .map_err(|failure| failure.error)
    }

    /// Brings an older document up to [`SCHEMA_VERSION`].
    pub fn migrate(&mut self) -> Result<(), ModelError> {
        let SchemaCheck::Older(from) = check_schema(self.doc)? else {
            return Ok(());
        };
        self.change(
            format!("migrate schema {from} to {SCHEMA_VERSION}"),
            |tx, _, _| {
                // Schema 0 (early drafts) could lack collections added later.
                for name in COLLECTIONS {
                    map_in(tx, &ROOT, name)?;
                }
                tx.put(ROOT, "schema", ScalarValue::Int(SCHEMA_VERSION as i64))?;
                Ok(())
            },
        )
    }

    /// Sets this partner's name.
    pub fn rename(&mut self, name: &str) -> Result<(), ModelError> {
        check_text("name", name)?;
        if name.trim().is_empty() {
            return Err(InvalidInput::Empty("name").into());
        }
        self.change("rename partner".into(), |tx, seat, _| {
            let partners = map_in(tx, &ROOT, "partners")?;
            let me = map_in(tx, &partners, seat.as_str())?;
            tx.put(&me, "name", name.trim())?;
            Ok(())
        })
    }

    /// Sets the name of the partner in `seat` (when they join the space).
    pub fn set_partner_name(&mut self, seat: Seat, name: &str) -> Result<(), ModelError> {
        let name = crate::text::short_text("name", name, 100)?;
        self.change(format!("name partner {seat}"), |tx, _, _| {
            let partners = map_in(tx, &ROOT, "partners")?;
            let p = map_in(tx, &partners, seat.as_str())?;
            tx.put(&p, "name", name)?;
            Ok(())
        })
    }

    /// Records a device of a partner in the space. A device already recorded
    /// is left as it is (pairing it again after an interrupted attempt); a
    /// revoked one cannot come back (an entry is never written over).
    pub fn add_device(&mut self, device: DeviceId, seat: Seat, name: &str) -> Result<(), ModelError> {
        check_text("device name", name)?;
        if let Some(known) = Membership::of(&*self.doc).get(&device) {
            return if known.is_active() && known.seat == seat {
                Ok(())
            } else {
                Err(ModelError::Refused(format!(
                    "device {} was {} this space before: it cannot be added again (a new device key can)",
                    device.short(),
                    if known.is_active() {
                        "added to another seat of"
                    } else {
                        "revoked from"
                    }
                )))
            };
        }
        self.change(format!("add device {}", device.short()), |tx, _, now| {
            let devices = map_in(tx, &ROOT, "devices")?;
            put_device(tx, &devices, device, seat, name, now)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::DeviceSecret;

    /// A fresh space founded by device `n` in seat a.
    pub(crate) fn founded(n: u8) -> (Automerge, DeviceId) {
        let device = DeviceSecret::from_bytes(&[n; 32]).device_id();
        let mut doc = Automerge::new().with_actor(device.actor());
        let founder = Founder {
            space_id: "00ff".into(),
            name: "Sam".into(),
            device,
            device_name: "laptop".into(),
        };
        create(&mut doc, &founder, 1_700_000_000_000).unwrap();
        (doc, device)
    }

    #[test]
    fn a_new_space_is_current_and_knows_its_founder() {
        let (doc, device) = founded(1);
        assert_eq!(check_schema(&doc).unwrap(), SchemaCheck::Current);
        assert_eq!(partner_name(&doc, Seat::A).as_deref(), Some("Sam"));
        assert_eq!(partner_name(&doc, Seat::B), None);
        assert_eq!(seat_of_actor(&doc, &device.actor()), Some(Seat::A));
        assert_eq!(space_id(&doc).as_deref(), Some("00ff"));
    }

    #[test]
    fn newer_schemas_are_refused_and_older_ones_migrated() {
        let (mut doc, _) = founded(1);
        doc.transact(|tx| tx.put(ROOT, "schema", ScalarValue::Int(SCHEMA_VERSION as i64 + 1)))
            .unwrap();
        assert!(matches!(check_schema(&doc), Err(ModelError::NewerSchema { .. })));

        let (mut doc, _) = founded(1);
        doc.transact(|tx| {
            tx.put(ROOT, "schema", ScalarValue::Int(0))?;
            tx.delete(ROOT, "agreements")
        })
        .unwrap();
        assert_eq!(check_schema(&doc).unwrap(), SchemaCheck::Older(0));
        Editor::new(&mut doc, Seat::A, 0).migrate().unwrap();
        assert_eq!(check_schema(&doc).unwrap(), SchemaCheck::Current);
        assert_eq!(access::collection(&doc, "agreements").len(), 1);
    }

    #[test]
    fn an_empty_document_is_not_a_space() {
        assert!(matches!(
            check_schema(&Automerge::new()),
            Err(ModelError::NotASpace(_))
        ));
    }
}

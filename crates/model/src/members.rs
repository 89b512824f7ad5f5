//! Membership: which devices belong to the space, and which of their changes
//! count.
//!
//! The space's devices are recorded in the document itself (`devices`), so a
//! partner's new laptop becomes known to every device through ordinary sync. An
//! entry only counts if the device that wrote it was already a member: membership
//! is the closure, from the founding device (the one that created the space),
//! over "added by a member". An entry written by anyone else is ignored.
//!
//! Revocation marks a device's entry with the last of its changes that still
//! counts (`revoked_after`, a sequence number of its automerge actor). Its
//! changes up to there stay part of the record; any later change it signs is
//! refused by every device that has learned of the revocation.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::Serialize;

use crate::access;
use crate::error::ModelError;
use crate::identity::DeviceId;
use crate::space::{Editor, map_in};
use crate::vocab::Seat;

/// A member device and its standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The device.
    pub id: DeviceId,
    /// Whose device it is.
    pub seat: Seat,
    /// Its name.
    pub name: String,
    /// When it was added (milliseconds since the epoch).
    pub added_at: i64,
    /// The device that added it (`None` for the founding device).
    pub added_by: Option<DeviceId>,
    /// If revoked: the last of its changes (by sequence number) that counts.
    pub revoked_after: Option<u64>,
}

impl Member {
    /// True unless the device has been revoked.
    pub fn is_active(&self) -> bool {
        self.revoked_after.is_none()
    }
}

/// Why a change does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    /// The actor is not a device key.
    #[error("a change was made by an actor that is not a device key")]
    NotADevice,
    /// The device is not a member of the space.
    #[error("a change was made by device {0}, which is not a member of this space")]
    NotAMember(String),
    /// The device was revoked before it made the change.
    #[error("a change was made by device {0} after it was revoked")]
    Revoked(String),
}

/// The space's member devices.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    founder: Option<DeviceId>,
    members: Vec<Member>,
}

impl Membership {
    /// Reads the membership of `doc`.
    pub fn of(doc: &impl ReadDoc) -> Membership {
        let colls = access::collection(doc, "devices");
        // The founder created the devices collection, in the space's first change.
        let founder = colls
            .first()
            .and_then(access::actor_of)
            .and_then(|a| DeviceId::from_actor(&a));
        // Every entry, with the device that wrote it.
        struct Entry {
            id: DeviceId,
            obj: automerge::ObjId,
            by: Option<DeviceId>,
        }
        let mut entries = Vec::new();
        for coll in &colls {
            for key in access::keys(doc, coll) {
                let Ok(id) = key.parse::<DeviceId>() else { continue };
                for obj in access::objects(doc, coll, &key, ObjType::Map) {
                    let by = access::actor_of(&obj).and_then(|a| DeviceId::from_actor(&a));
                    entries.push(Entry { id, obj, by });
                }
            }
        }
        let mut members: Vec<Member> = Vec::new();
        let Some(founder_id) = founder else {
            return Membership::default();
        };
        // Closure from the founder: an entry counts once its writer is a member.
        let mut grew = true;
        while grew {
            grew = false;
            for e in &entries {
                if members.iter().any(|m| m.id == e.id) {
                    continue;
                }
                let writer_ok = match e.by {
                    Some(by) if by == founder_id && e.id == founder_id => true,
                    Some(by) => members.iter().any(|m| m.id == by),
                    None => false,
                };
                if !writer_ok {
                    continue;
                }
                let Some(seat) = access::string(doc, &e.obj, "seat").and_then(|s| s.parse().ok()) else {
                    continue;
                };
                members.push(Member {
                    id: e.id,
                    seat,
                    name: access::string(doc, &e.obj, "name").unwrap_or_default(),
                    added_at: access::int(doc, &e.obj, "added_at").unwrap_or(0),
                    added_by: e.by.filter(|b| *b != e.id),
                    revoked_after: None,
                });
                grew = true;
            }
        }
        // Revocations count when written by a member; the earliest cut-off wins.
        for e in &entries {
            let cut = access::all_scalars(doc, &e.obj, "revoked_after")
                .into_iter()
                .filter(|v| {
                    v.actor
                        .as_ref()
                        .and_then(DeviceId::from_actor)
                        .is_some_and(|by| members.iter().any(|m| m.id == by))
                })
                .filter_map(|v| access::scalar_int(&v.value))
                .filter_map(|n| u64::try_from(n).ok())
                .min();
            if let (Some(cut), Some(m)) = (cut, members.iter_mut().find(|m| m.id == e.id)) {
                m.revoked_after = Some(m.revoked_after.map_or(cut, |c| c.min(cut)));
            }
        }
        members.sort_by_key(|m| (m.seat, m.added_at));
        Membership {
            founder: Some(founder_id),
            members,
        }
    }

    /// The device that founded the space.
    pub fn founder(&self) -> Option<DeviceId> {
        self.founder
    }

    /// Every member, revoked ones included.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member `id`, if it is one.
    pub fn get(&self, id: &DeviceId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == *id)
    }

    /// True if `id` is a member that has not been revoked: such a device may
    /// connect.
    pub fn is_active(&self, id: &DeviceId) -> bool {
        self.get(id).is_some_and(Member::is_active)
    }

    /// The devices that may connect.
    pub fn active(&self) -> Vec<DeviceId> {
        self.members
            .iter()
            .filter(|m| m.is_active())
            .map(|m| m.id)
            .collect()
    }

    /// Whether change number `seq` of `actor` counts.
    pub fn check_change(&self, actor: &ActorId, seq: u64) -> Result<(), ChangeRefusal> {
        // Members are matched by bytes: decoding the key is only needed to name
        // a stranger.
        let Some(m) = self.members.iter().find(|m| m.id.is_actor(actor)) else {
            return Err(match DeviceId::from_actor(actor) {
                Some(id) => ChangeRefusal::NotAMember(id.short()),
                None => ChangeRefusal::NotADevice,
            });
        };
        let id = m.id;
        match m.revoked_after {
            Some(cut) if seq > cut => Err(ChangeRefusal::Revoked(id.short())),
            _ => Ok(()),
        }
    }
}

/// The highest sequence number among `actor`'s changes in `doc` (0 if none).
pub fn latest_seq(doc: &Automerge, actor: &ActorId) -> u64 {
    doc.get_changes(&[])
        .iter()
        .filter(|c| c.actor_id() == actor)
        .map(|c| c.seq())
        .max()
        .unwrap_or(0)
}

impl Editor<'_> {
    /// Revokes `device`: its changes so far stay; any later one is refused. The
    /// cut-off is the last of its changes this document holds.
    pub fn revoke_device(&mut self, device: DeviceId) -> Result<u64, ModelError> {
        let members = Membership::of(&*self.doc);
        let Some(member) = members.get(&device) else {
            return Err(ModelError::NotFound {
                what: "device",
                prefix: device.short(),
            });
        };
        if !member.is_active() {
            return Err(ModelError::Refused(format!(
                "device {} is already revoked",
                device.short()
            )));
        }
        let cut = latest_seq(self.doc, &device.actor());
        self.change(format!("revoke device {}", device.short()), |tx, _, now| {
            let devices = map_in(tx, &ROOT, "devices")?;
            for obj in access::objects(&*tx, &devices, &device.to_string(), ObjType::Map) {
                tx.put(&obj, "revoked_after", ScalarValue::Int(cut as i64))?;
                tx.put(&obj, "revoked_at", ScalarValue::Timestamp(now))?;
            }
            Ok(cut)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceSecret;
    use crate::space::tests::founded;

    fn device(n: u8) -> DeviceId {
        DeviceSecret::from_bytes(&[n; 32]).device_id()
    }

    #[test]
    fn members_are_the_closure_from_the_founder() {
        let (mut doc, founder) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::B, "phone")
            .unwrap();
        // Device 2 (a member) adds device 3.
        let mut as_two = doc.fork().with_actor(device(2).actor());
        Editor::new(&mut as_two, Seat::B, 2)
            .add_device(device(3), Seat::B, "tablet")
            .unwrap();
        // Device 9, not a member, writes an entry for device 8.
        let mut as_nine = as_two.fork().with_actor(device(9).actor());
        Editor::new(&mut as_nine, Seat::A, 3)
            .add_device(device(8), Seat::A, "evil")
            .unwrap();

        let m = Membership::of(&as_nine);
        assert_eq!(m.founder(), Some(founder));
        assert!(m.is_active(&founder));
        assert!(m.is_active(&device(2)));
        assert!(m.is_active(&device(3)));
        assert_eq!(m.get(&device(3)).unwrap().added_by, Some(device(2)));
        assert!(
            !m.is_active(&device(8)),
            "an entry by a non-member does not count"
        );
        assert!(m.get(&device(9)).is_none());
        assert_eq!(
            m.check_change(&device(9).actor(), 1),
            Err(ChangeRefusal::NotAMember(device(9).short()))
        );
    }

    #[test]
    fn a_revoked_device_keeps_its_past_but_not_its_future() {
        let (mut doc, _) = founded(1);
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(device(2), Seat::B, "phone")
            .unwrap();
        let mut phone = doc.fork().with_actor(device(2).actor());
        Editor::new(&mut phone, Seat::B, 2).rename("Alex").unwrap();
        doc.merge(&mut phone).unwrap();
        assert_eq!(
            Editor::new(&mut doc, Seat::A, 3)
                .revoke_device(device(2))
                .unwrap(),
            1
        );
        let m = Membership::of(&doc);
        assert!(!m.is_active(&device(2)));
        assert!(m.check_change(&device(2).actor(), 1).is_ok());
        assert_eq!(
            m.check_change(&device(2).actor(), 2),
            Err(ChangeRefusal::Revoked(device(2).short()))
        );
        assert!(
            Editor::new(&mut doc, Seat::A, 4)
                .revoke_device(device(2))
                .is_err()
        );
        assert!(
            Editor::new(&mut doc, Seat::A, 4)
                .revoke_device(device(7))
                .is_err()
        );
    }
}

//! The `membership` target: `Membership::of` on a document loaded from
//! arbitrary bytes (input as for `document_load`), checked against what
//! membership promises ([`membership_invariants`], which every model read of
//! the other targets checks too).

use automerge::Automerge;
use duet_model::{ChangeRefusal, DeviceId, Membership, space};

use super::document_load::load_damaged;

/// `Membership::of` on a document loaded from arbitrary bytes.
///
/// Input: as for [`document_load`](fn@super::document_load). Checks the
/// membership rules (founder first, members added by members, checks
/// consistent with the list).
pub fn membership(data: &[u8]) {
    if let Some(doc) = load_damaged(data) {
        membership_invariants(&doc);
    }
}

/// What membership promises, on any document: the founder counts first, every
/// other member was added by a member, and `check_change`, `is_active` and
/// `active` agree with the member list.
pub(crate) fn membership_invariants(doc: &Automerge) {
    let m = Membership::of(doc);
    let members = m.members();
    for (i, a) in members.iter().enumerate() {
        assert!(
            members[i + 1..].iter().all(|b| b.id != a.id),
            "a device listed twice"
        );
        if Some(a.id) == m.founder() {
            assert_eq!(a.added_by, None);
        } else {
            let by = a.added_by.expect("a non-founder member has an adder");
            assert!(m.get(&by).is_some(), "a member added by a non-member");
        }
        assert_eq!(m.is_active(&a.id), a.revoked_after.is_none());
    }
    if !members.is_empty() {
        let f = m.founder().expect("members without a founder");
        assert!(m.get(&f).is_some(), "members without the founder");
    }
    assert_eq!(
        m.active(),
        members
            .iter()
            .filter(|x| x.is_active())
            .map(|x| x.id)
            .collect::<Vec<_>>()
    );
    assert_eq!(space::devices(doc), members.to_vec());
    for c in doc.get_changes(&[]).iter().take(256) {
        let expected = match DeviceId::from_actor(c.actor_id()) {
            None => Err(ChangeRefusal::NotADevice),
            Some(d) => match m.get(&d) {
                None => Err(ChangeRefusal::NotAMember(d.short())),
                Some(x) if x.revoked_after.is_some_and(|cut| c.seq() > cut) => {
                    Err(ChangeRefusal::Revoked(d.short()))
                }
                Some(_) => Ok(()),
            },
        };
        assert_eq!(m.check_change(c.actor_id(), c.seq()), expected);
    }
}

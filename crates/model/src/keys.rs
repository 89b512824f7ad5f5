//! Space keys and the relay address, as the document keeps them.
//!
//! The key that seals bundles (files and the relay's mailbox) travels only as
//! envelopes: one sealed box per recipient device, which only that device can
//! open. They live in the document so that every sync path distributes them:
//!
//! ```text
//! keys: { <key id, 32 hex digits>: { generation: Int,
//!                                    envelopes: { <device id hex>: Bytes } } }
//! settings: { relay: "host:port" }
//! ```
//!
//! This module knows only the layout; the bytes are opaque here (the
//! cryptography is `duet_sync::proto::keyring`'s). Only active members can
//! write a key or an envelope, and envelopes only for active members (every
//! change is signed and judged where it was written, `crate::authority`), so
//! an entry needs no other authentication.
//!
//! Reads are forgiving like every read of the document: a value of the wrong
//! type reads as absent, and maps two devices created concurrently (two
//! devices each adding the space's first key offline) are merged.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

use crate::access;
use crate::error::{InvalidInput, ModelError};
use crate::identity::DeviceId;
use crate::members::Membership;
use crate::space::{Editor, map_in};

/// The length of a key id in hex digits (16 bytes).
pub const KEY_ID_HEX: usize = 32;

/// The largest envelope the document takes, in bytes (one is 84).
pub const MAX_ENVELOPE: usize = 128;

/// The longest relay address, in characters.
pub const MAX_RELAY_CHARS: usize = 255;

/// One space key as the document holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key id: 32 lowercase hex digits.
    pub id: String,
    /// The key's generation (1 at creation, one more at each rotation).
    pub generation: u32,
    /// The envelopes, by recipient device. A device may appear more than once
    /// when two devices wrote its envelope concurrently; readers try each.
    pub envelopes: Vec<(DeviceId, Vec<u8>)>,
}

/// True for 32 lowercase hex digits.
fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_HEX
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_key_id(id: &str) -> Result<(), InvalidInput> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(InvalidInput::Id(id.to_string()))
    }
}

fn check_envelopes(envelopes: &[(DeviceId, Vec<u8>)]) -> Result<(), ModelError> {
    for (device, bytes) in envelopes {
        if bytes.is_empty() || bytes.len() > MAX_ENVELOPE {
            return Err(ModelError::Refused(format!(
                "the key envelope for device {} is {} bytes; it must be 1 to {MAX_ENVELOPE}",
                device.short(),
                bytes.len()
            )));
        }
    }
    Ok(())
}

/// The generation stored in an entry object, if it is a valid one.
fn generation(doc: &impl ReadDoc, entry: &ObjId) -> Option<u32> {
    access::int(doc, entry, "generation")
        .and_then(|g| u32::try_from(g).ok())
        .filter(|g| *g >= 1)
}

/// Every space key entry of `doc`, sorted by id. An entry without a valid
/// generation reads as absent; envelopes that are not bytes, over
/// [`MAX_ENVELOPE`], or addressed to something that is not a device key are
/// skipped.
///
/// Only what a member wrote before any cut-off of its own counts: a key (or an
/// envelope) that a revoked device wrote after its revocation, and that
/// reached this document through a device that had not yet learned of it, is
/// never used, or the revoked device could read what is sealed with it.
pub fn key_entries(doc: &impl ReadDoc) -> Vec<KeyEntry> {
    let members = Membership::of(doc);
    let mut out: Vec<KeyEntry> = Vec::new();
    for keys in access::objects(doc, &ROOT, "keys", ObjType::Map) {
        for id in access::keys(doc, &keys) {
            if !is_key_id(&id) {
                continue;
            }
            for entry in access::objects(doc, &keys, &id, ObjType::Map) {
                if !members.counts(&entry) {
                    continue;
                }
                let Some(generation) = generation(doc, &entry) else {
                    continue;
                };
                let envelopes = entry_envelopes(doc, &entry, &members);
                match out.iter_mut().find(|e| e.id == id) {
                    // Merged: the first valid generation (the winner's) stays.
                    Some(e) => {
                        for env in envelopes {
                            if !e.envelopes.contains(&env) {
                                e.envelopes.push(env);
                            }
                        }
                    }
                    None => out.push(KeyEntry {
                        id: id.clone(),
                        generation,
                        envelopes,
                    }),
                }
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The envelopes of one entry object, all its `envelopes` maps merged.
fn entry_envelopes(doc: &impl ReadDoc, entry: &ObjId, members: &Membership) -> Vec<(DeviceId, Vec<u8>)> {
    let mut out: Vec<(DeviceId, Vec<u8>)> = Vec::new();
    for map in access::objects(doc, entry, "envelopes", ObjType::Map) {
        for key in access::keys(doc, &map) {
            let Ok(device) = key.parse::<DeviceId>() else {
                continue;
            };
            for (v, op) in doc.get_all(&map, &key).unwrap_or_default() {
                if !members.counts(&op) {
                    continue;
                }
                let Value::Scalar(v) = v else { continue };
                let ScalarValue::Bytes(bytes) = v.into_owned() else {
                    continue;
                };
                if bytes.is_empty() || bytes.len() > MAX_ENVELOPE {
                    continue;
                }
                let env = (device, bytes);
                if !out.contains(&env) {
                    out.push(env);
                }
            }
        }
    }
    out
}

/// The relay address the couple set (root map `settings`, key `relay`), if
/// there is a valid one.
pub fn relay(doc: &impl ReadDoc) -> Option<String> {
    access::objects(doc, &ROOT, "settings", ObjType::Map)
        .iter()
        .find_map(|s| access::string(doc, s, "relay"))
        .filter(|r| check_relay(r).is_ok())
}

/// Checks a relay address: not empty, at most [`MAX_RELAY_CHARS`] characters,
/// no spaces or control characters.
fn check_relay(addr: &str) -> Result<(), ModelError> {
    if addr.is_empty() {
        return Err(InvalidInput::Empty("relay address").into());
    }
    let len = addr.chars().count();
    if len > MAX_RELAY_CHARS {
        return Err(InvalidInput::TooManyChars {
            what: "relay address",
            len,
            limit: MAX_RELAY_CHARS,
        }
        .into());
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ModelError::Refused(format!(
            "invalid relay address '{}': it must not contain spaces or control characters (expected host:port, such as relay.example.org:7481)",
            addr.escape_debug()
        )));
    }
    Ok(())
}

/// The entry object of key `id`, in whichever `keys` map holds it (the winner
/// first), if it has a valid generation.
fn find_entry(tx: &Transaction<'_>, id: &str) -> Option<(ObjId, u32)> {
    access::objects(tx, &ROOT, "keys", ObjType::Map)
        .iter()
        .flat_map(|keys| access::objects(tx, keys, id, ObjType::Map))
        .find_map(|entry| generation(tx, &entry).map(|g| (entry, g)))
}

fn put_envelopes(
    tx: &mut Transaction<'_>,
    entry: &ObjId,
    envelopes: &[(DeviceId, Vec<u8>)],
) -> Result<(), ModelError> {
    let map = map_in(tx, entry, "envelopes")?;
    for (device, bytes) in envelopes {
        tx.put(&map, device.to_string(), ScalarValue::Bytes(bytes.clone()))?;
    }
    Ok(())
}

impl Editor<'_> {
    /// Records the space key `id` of `generation` with `envelopes` (one per
    /// recipient device), as one change. Recording a key the document already
    /// holds adds the envelopes; a different generation for it is refused.
    pub fn add_space_key(
        &mut self,
        id: &str,
        generation: u32,
        envelopes: &[(DeviceId, Vec<u8>)],
    ) -> Result<(), ModelError> {
        check_key_id(id)?;
        self.change(format!("add space key {}", &id[..8]), |tx, _, _| {
            put_space_key(tx, id, generation, envelopes)
        })
    }

    /// Adds `envelopes` to the recorded space key `id`, as one change.
    pub fn add_envelopes(&mut self, id: &str, envelopes: &[(DeviceId, Vec<u8>)]) -> Result<(), ModelError> {
        check_key_id(id)?;
        check_envelopes(envelopes)?;
        self.change(format!("add key envelopes for {}", &id[..8]), |tx, _, _| {
            let Some((entry, _)) = find_entry(tx, id) else {
                return Err(ModelError::NotFound {
                    what: "space key",
                    prefix: id.to_string(),
                });
            };
            put_envelopes(tx, &entry, envelopes)
        })
    }

    /// Sets the couple's relay address (`host:port`), or clears it with `None`.
    pub fn set_relay(&mut self, addr: Option<&str>) -> Result<(), ModelError> {
        let addr = addr.map(str::trim);
        if let Some(a) = addr {
            check_relay(a)?;
        }
        let message = if addr.is_some() {
            "set relay"
        } else {
            "clear relay"
        };
        self.change(message.to_string(), |tx, _, _| {
            match addr {
                Some(a) => {
                    let settings = map_in(tx, &ROOT, "settings")?;
                    tx.put(&settings, "relay", a)?;
                }
                None => {
                    // Every settings map, so that no concurrent copy still
                    // names a relay.
                    for settings in access::objects(&*tx, &ROOT, "settings", ObjType::Map) {
                        if tx.get(&settings, "relay")?.is_some() {
                            tx.delete(&settings, "relay")?;
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

/// Records space key `id` of `generation` with `envelopes` inside a
/// transaction (the founding change, or [`Editor::add_space_key`]'s). A key
/// already recorded only gets the envelopes; another generation for it is
/// refused.
pub(crate) fn put_space_key(
    tx: &mut Transaction<'_>,
    id: &str,
    generation: u32,
    envelopes: &[(DeviceId, Vec<u8>)],
) -> Result<(), ModelError> {
    check_key_id(id)?;
    check_envelopes(envelopes)?;
    if generation == 0 {
        return Err(ModelError::Refused(
            "a space key's generation starts at 1".to_string(),
        ));
    }
    let entry = match find_entry(tx, id) {
        Some((_, g)) if g != generation => {
            return Err(ModelError::Refused(format!(
                "space key {id} is already recorded with generation {g}, not {generation}"
            )));
        }
        Some((entry, _)) => entry,
        None => {
            let keys = map_in(tx, &ROOT, "keys")?;
            let entry = tx.put_object(&keys, id, ObjType::Map)?;
            tx.put(&entry, "generation", ScalarValue::Int(i64::from(generation)))?;
            entry
        }
    };
    put_envelopes(tx, &entry, envelopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceSecret;
    use crate::space::tests::founded;
    use crate::vocab::Seat;
    use automerge::Automerge;

    fn device(n: u8) -> DeviceId {
        DeviceSecret::from_bytes(&[n; 32]).device_id()
    }

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(16)
    }

    fn editor(doc: &mut Automerge) -> Editor<'_> {
        Editor::new(doc, Seat::A, 1_700_000_000_000)
    }

    #[test]
    fn keys_are_added_and_read_back() {
        let (mut doc, me) = founded(1);
        assert!(key_entries(&doc).is_empty());
        let before = doc.get_heads();
        editor(&mut doc)
            .add_space_key(&id(0xab), 1, &[(me, vec![1; 84]), (device(2), vec![2; 84])])
            .unwrap();
        assert_eq!(doc.get_changes(&before).len(), 1, "one change");
        editor(&mut doc)
            .add_space_key(&id(0x01), 2, &[(me, vec![3; 84])])
            .unwrap();
        editor(&mut doc)
            .add_envelopes(&id(0xab), &[(device(3), vec![4; 84])])
            .unwrap();
        let entries = key_entries(&doc);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, id(0x01), "sorted by id");
        assert_eq!(entries[0].generation, 2);
        assert_eq!(entries[0].envelopes, vec![(me, vec![3; 84])]);
        assert_eq!(entries[1].generation, 1);
        let mut envs = entries[1].envelopes.clone();
        envs.sort_by_key(|(d, _)| d.to_string());
        let mut want = vec![
            (me, vec![1; 84]),
            (device(2), vec![2; 84]),
            (device(3), vec![4; 84]),
        ];
        want.sort_by_key(|(d, _)| d.to_string());
        assert_eq!(envs, want);
        // Recording the same key again adds envelopes; another generation is refused.
        editor(&mut doc)
            .add_space_key(&id(0x01), 2, &[(device(2), vec![5; 84])])
            .unwrap();
        assert_eq!(key_entries(&doc)[0].envelopes.len(), 2);
        assert!(matches!(
            editor(&mut doc).add_space_key(&id(0x01), 3, &[]),
            Err(ModelError::Refused(_))
        ));
    }

    #[test]
    fn bad_input_is_refused_and_nothing_written() {
        let (mut doc, me) = founded(1);
        let heads = doc.get_heads();
        let e = |doc: &mut Automerge, i: &str| editor(doc).add_space_key(i, 1, &[]);
        assert!(matches!(
            e(&mut doc, "abc"),
            Err(ModelError::Invalid(InvalidInput::Id(_)))
        ));
        assert!(e(&mut doc, &id(0xab).to_uppercase()).is_err(), "lowercase only");
        assert!(e(&mut doc, &format!("{}zz", &id(1)[..30])).is_err());
        assert!(e(&mut doc, &format!("{}0", id(1))).is_err(), "33 digits");
        assert!(
            editor(&mut doc).add_space_key(&id(1), 0, &[]).is_err(),
            "generation 0"
        );
        assert!(
            editor(&mut doc)
                .add_space_key(&id(1), 1, &[(me, vec![0; MAX_ENVELOPE + 1])])
                .is_err()
        );
        assert!(
            editor(&mut doc)
                .add_space_key(&id(1), 1, &[(me, vec![])])
                .is_err()
        );
        assert!(
            matches!(
                editor(&mut doc).add_envelopes(&id(1), &[(me, vec![1; 84])]),
                Err(ModelError::NotFound { .. })
            ),
            "no such key"
        );
        for bad in [
            "",
            "relay example:1",
            "relay\u{7}:1",
            "tab\there:1",
            &"x".repeat(256),
        ] {
            assert!(editor(&mut doc).set_relay(Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(doc.get_heads(), heads, "nothing was written");
        editor(&mut doc).set_relay(Some(&"x".repeat(255))).unwrap();
    }

    #[test]
    fn envelopes_and_keys_from_concurrent_writers_are_merged() {
        let (mut doc, me) = founded(1);
        editor(&mut doc).add_device(device(2), Seat::B, "phone").unwrap();
        // Two devices each add a first key offline: two `keys` maps.
        let mut phone = doc.fork().with_actor(device(2).actor());
        editor(&mut doc)
            .add_space_key(&id(0xaa), 1, &[(me, vec![1; 84])])
            .unwrap();
        Editor::new(&mut phone, Seat::B, 5)
            .add_space_key(&id(0xbb), 1, &[(device(2), vec![2; 84])])
            .unwrap();
        doc.merge(&mut phone).unwrap();
        let keys_maps = access::objects(&doc, &ROOT, "keys", ObjType::Map);
        assert_eq!(keys_maps.len(), 2, "a conflict, merged on read");
        let entries = key_entries(&doc);
        assert_eq!(
            entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            vec![id(0xaa), id(0xbb)]
        );
        // Then both add envelopes to key aa concurrently, one of them for the
        // same device with different bytes.
        let mut phone = doc.fork().with_actor(device(2).actor());
        editor(&mut doc)
            .add_envelopes(&id(0xaa), &[(device(3), vec![3; 84])])
            .unwrap();
        Editor::new(&mut phone, Seat::B, 6)
            .add_envelopes(&id(0xaa), &[(device(4), vec![4; 84]), (device(3), vec![5; 84])])
            .unwrap();
        doc.merge(&mut phone).unwrap();
        let aa = key_entries(&doc).into_iter().find(|e| e.id == id(0xaa)).unwrap();
        for want in [
            (me, vec![1; 84]),
            (device(3), vec![3; 84]),
            (device(3), vec![5; 84]),
            (device(4), vec![4; 84]),
        ] {
            assert!(aa.envelopes.contains(&want), "{want:?} in {:?}", aa.envelopes);
        }
        assert_eq!(aa.envelopes.len(), 4);
        // Both add the same key concurrently: one entry, envelopes from both.
        let mut phone = doc.fork().with_actor(device(2).actor());
        editor(&mut doc)
            .add_space_key(&id(0xcc), 2, &[(me, vec![6; 84])])
            .unwrap();
        Editor::new(&mut phone, Seat::B, 7)
            .add_space_key(&id(0xcc), 2, &[(device(2), vec![7; 84])])
            .unwrap();
        doc.merge(&mut phone).unwrap();
        let copies: usize = access::objects(&doc, &ROOT, "keys", ObjType::Map)
            .iter()
            .map(|k| access::objects(&doc, k, &id(0xcc), ObjType::Map).len())
            .sum();
        assert_eq!(copies, 2, "two entry objects for one key");
        let cc: Vec<KeyEntry> = key_entries(&doc)
            .into_iter()
            .filter(|e| e.id == id(0xcc))
            .collect();
        assert_eq!(cc.len(), 1);
        assert_eq!(cc[0].envelopes.len(), 2);
        // And adding envelopes to it afterwards still works.
        editor(&mut doc)
            .add_envelopes(&id(0xcc), &[(device(5), vec![8; 84])])
            .unwrap();
        let cc = key_entries(&doc).into_iter().find(|e| e.id == id(0xcc)).unwrap();
        assert_eq!(cc.envelopes.len(), 3);
    }

    #[test]
    fn values_of_the_wrong_type_read_as_absent() {
        let (mut doc, me) = founded(1);
        doc.transact(|tx| {
            let keys = tx.put_object(ROOT, "keys", ObjType::Map)?;
            // A scalar where an entry belongs; a bad id; a generation of 0 and of a string.
            tx.put(&keys, id(1), "not a map")?;
            let bad_id = tx.put_object(&keys, "ZZ", ObjType::Map)?;
            tx.put(&bad_id, "generation", 1)?;
            let zero = tx.put_object(&keys, id(2), ObjType::Map)?;
            tx.put(&zero, "generation", 0)?;
            let text = tx.put_object(&keys, id(3), ObjType::Map)?;
            tx.put(&text, "generation", "one")?;
            // A good entry with bad envelopes beside a good one.
            let good = tx.put_object(&keys, id(4), ObjType::Map)?;
            tx.put(&good, "generation", ScalarValue::Uint(3))?;
            let envs = tx.put_object(&good, "envelopes", ObjType::Map)?;
            tx.put(&envs, "not a device", ScalarValue::Bytes(vec![1; 84]))?;
            tx.put(&envs, device(2).to_string(), "a string")?;
            tx.put(&envs, device(3).to_string(), ScalarValue::Bytes(vec![1; 500]))?;
            tx.put(&envs, me.to_string(), ScalarValue::Bytes(vec![9; 84]))?;
            let settings = tx.put_object(ROOT, "settings", ObjType::Map)?;
            tx.put(&settings, "relay", "has space:1")?;
            Ok::<_, automerge::AutomergeError>(())
        })
        .unwrap();
        let entries = key_entries(&doc);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, id(4));
        assert_eq!(entries[0].generation, 3);
        assert_eq!(entries[0].envelopes, vec![(me, vec![9; 84])]);
        assert_eq!(relay(&doc), None, "an invalid stored address reads as absent");
        // The scalar in place of a map does not stop adding that key.
        editor(&mut doc)
            .add_space_key(&id(1), 1, &[(me, vec![1; 84])])
            .unwrap();
        assert!(key_entries(&doc).iter().any(|e| e.id == id(1)));
    }

    #[test]
    fn the_relay_is_set_and_cleared() {
        let (mut doc, _) = founded(1);
        assert_eq!(relay(&doc), None);
        editor(&mut doc)
            .set_relay(Some(" relay.example.org:7481 "))
            .unwrap();
        assert_eq!(relay(&doc).as_deref(), Some("relay.example.org:7481"));
        editor(&mut doc).set_relay(Some("[::1]:7481")).unwrap();
        assert_eq!(relay(&doc).as_deref(), Some("[::1]:7481"));
        editor(&mut doc).set_relay(None).unwrap();
        assert_eq!(relay(&doc), None);
        // Clearing when nothing is set is harmless.
        editor(&mut doc).set_relay(None).unwrap();
        // Two devices create `settings` concurrently; clearing clears both.
        let (mut a, _) = founded(1);
        let mut other = a.fork().with_actor(device(2).actor());
        editor(&mut a).set_relay(Some("a.example:1")).unwrap();
        Editor::new(&mut other, Seat::A, 2)
            .set_relay(Some("b.example:1"))
            .unwrap();
        a.merge(&mut other).unwrap();
        assert_eq!(access::objects(&a, &ROOT, "settings", ObjType::Map).len(), 2);
        assert!(relay(&a).is_some());
        editor(&mut a).set_relay(None).unwrap();
        assert_eq!(relay(&a), None);
    }
}

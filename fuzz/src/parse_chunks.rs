//! The `parse_chunks` target: `verify::parse_chunks` on arbitrary chunk data
//! (input: the data), then automerge's apply on the home document.

use automerge::Change;
use duet_model::DeviceId;
use duet_sync::proto::verify;

use super::fixtures::{home, read_everything};

/// `verify::parse_chunks` on arbitrary chunk data.
///
/// Input: the data. Checks: every change it returns re-parses from its own
/// bytes to the same hash; the changes then go through automerge's apply on a
/// copy of the home document, and the model reads still work on the result.
pub fn parse_chunks(data: &[u8]) {
    let Ok(changes) = verify::parse_chunks(data) else {
        return;
    };
    for c in &changes {
        let again = Change::from_bytes(c.raw_bytes().to_vec()).expect("a parsed change re-parses");
        assert_eq!(again.hash(), c.hash(), "a change's hash changed on re-parsing");
        let _ = (c.deps(), c.seq(), c.message(), c.timestamp(), c.len());
        let _ = c.decode();
        let _ = DeviceId::from_actor(c.actor_id());
    }
    let mut doc = home();
    if doc.apply_changes(changes).is_ok() {
        read_everything(&doc);
    }
}

//! The `wire_message` target: `Message::decode` on an arbitrary frame (input:
//! `[kind][payload...]`), with the round trip checked.

use duet_sync::proto::frame::Frame;
use duet_sync::proto::verify;
use duet_sync::proto::wire::{self, Message};

use super::fixtures::own_frame;

/// `Message::decode` on an arbitrary frame.
///
/// Input: `[kind][payload...]`. Checks: a decoded message re-encodes into one
/// frame of the same type that decodes to the same message; a sync message's
/// inner automerge message is decoded as the session would.
pub fn wire_message(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let frame = Frame {
        kind,
        payload: payload.to_vec(),
    };
    match Message::decode(&frame) {
        Ok(m) => {
            let bytes = m.encode().expect("a decoded message re-encodes");
            let f = own_frame(&bytes);
            assert_eq!(f.kind, kind);
            assert_eq!(
                Message::decode(&f).as_ref(),
                Ok(&m),
                "the round trip changed the message"
            );
            match &m {
                Message::Hello(h) => assert!(h.space_id.len() <= wire::MAX_SPACE_ID),
                Message::Sync(s) => {
                    assert!(s.attestations.len() <= wire::MAX_ATTESTATIONS);
                    let _ = verify::check_signatures(&s.attestations);
                    if let Ok(inner) = automerge::sync::Message::decode(&s.message) {
                        for chunk in inner.changes.iter() {
                            let _ = verify::parse_chunks(chunk);
                        }
                    }
                }
                Message::Failure(f) => assert!(f.text.len() <= wire::MAX_FAILURE_TEXT),
                Message::Bye => assert!(payload.is_empty()),
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

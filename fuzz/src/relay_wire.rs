//! The `relay_wire` target: a relay frame (input: a type byte, then the
//! payload) decoded as a request and as a response, with the round trip
//! checked.

use duet_sync::proto::frame::Frame;
use duet_sync::proto::relay::{self as relay_proto, Request, Response};

use super::fixtures::own_frame;

/// Reads the input as one relay frame: a type byte, then the payload; decodes
/// it as a request and as a response. Properties: decoding never panics; what
/// decodes re-encodes to a frame that decodes to the same value; a decoded
/// access list keeps its bounds.
pub fn relay_wire(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let frame = Frame {
        kind,
        payload: payload.to_vec(),
    };
    if let Ok(r) = Request::decode(&frame) {
        let bytes = r.encode().expect("a decoded request re-encodes");
        let f = own_frame(&bytes);
        assert_eq!(
            Request::decode(&f).as_ref(),
            Ok(&r),
            "the round trip changed the request"
        );
        if let Request::SetAccess(a) = &r {
            assert!(a.devices.len() <= relay_proto::MAX_ACCESS_DEVICES);
            let _ = a.verify();
        }
    }
    if let Ok(r) = Response::decode(&frame) {
        let bytes = r.encode().expect("a decoded response re-encodes");
        let f = own_frame(&bytes);
        assert_eq!(
            Response::decode(&f).as_ref(),
            Ok(&r),
            "the round trip changed the response"
        );
    }
}

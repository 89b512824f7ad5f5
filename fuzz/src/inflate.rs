//! The `inflate_check` target: the bound on what a peer's automerge data
//! inflates to ([`duet_sync::proto::inflate`]), against an unbounded inflate.

use std::io::Read;

use duet_sync::proto::inflate;
use duet_sync::proto::verify;

/// The bound the target checks against: small, so that inputs the fuzzer can
/// make (a few KiB, up to about a thousandfold) cross it.
const LIMIT: u64 = 64 * 1024;

/// `inflate::check_all_within` on chunk data. Input: `[mode][data]`.
///
/// Mode bit 0 clear: `data` as it is, under [`LIMIT`]. The count is the bound
/// exactly (it passes at its own total and not one byte under); data it lets
/// through goes on to `verify::parse_chunks` (automerge's panics are the
/// `parse_chunks` target's business, and known ones are dropped as there).
///
/// Mode bit 0 set: `data` is the body of a compressed change chunk (type 2).
/// The check passes exactly when the chunk and what the body inflates to
/// (inflated here without a bound, as automerge does) fit [`LIMIT`], and then
/// counts exactly that.
pub fn inflate_check(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(total) = inflate::check_all_within([data], LIMIT) {
            assert!(total <= LIMIT);
            assert!(total >= data.len() as u64, "every byte as it came counts");
            assert_eq!(inflate::check_all_within([data], total), Ok(total));
            if total > 0 {
                assert!(inflate::check_all_within([data], total - 1).is_err());
            }
            let _ = verify::parse_chunks(data);
        }
        return;
    }
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = data.len() as u64;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        chunk.push(if len == 0 { b } else { b | 0x80 });
        if len == 0 {
            break;
        }
    }
    chunk.extend_from_slice(data);
    let mut inflated = Vec::new();
    let unbounded = flate2::bufread::DeflateDecoder::new(data)
        .read_to_end(&mut inflated)
        .ok()
        .map(|n| chunk.len() as u64 + n as u64);
    match (inflate::check_all_within([&chunk[..]], LIMIT), unbounded) {
        (Ok(total), Some(expected)) => assert_eq!(total, expected),
        (Ok(total), None) => panic!("counted {total} for a stream that does not inflate"),
        (Err(_), Some(expected)) => assert!(expected > LIMIT, "refused {expected} bytes"),
        (Err(_), None) => {}
    }
}

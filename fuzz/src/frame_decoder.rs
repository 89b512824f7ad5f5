//! The `frame_decoder` target: the frame decoder fed a stream in arbitrary
//! pieces (input: repeated `[n: u8][n bytes]`), checked against decoding the
//! same stream in one piece.

use duet_sync::proto::frame::{self, FrameDecoder};

use super::fixtures::Input;

/// The frame decoder fed a stream in arbitrary pieces.
///
/// Input: repeated `[n: u8][n bytes]`; each piece is pushed, then every
/// complete frame drained. Checks: each frame re-encodes to exactly the bytes
/// it came from, `buffered` counts the rest, the limit holds, and decoding the
/// same stream in one piece gives the same frames and the same error.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input(data);
    let mut d = FrameDecoder::new();
    let mut pushed: Vec<u8> = Vec::new();
    let mut consumed = 0usize;
    let mut got = Vec::new();
    let mut failed = None;
    while !input.is_empty() && failed.is_none() {
        let n = usize::from(input.byte());
        let piece = input.take(n);
        d.push(piece);
        pushed.extend_from_slice(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.payload.len() < frame::MAX_FRAME, "a frame over the limit");
                    let bytes = frame::encode(f.kind, &f.payload).expect("a decoded frame re-encodes");
                    assert_eq!(
                        pushed.get(consumed..consumed + bytes.len()),
                        Some(bytes.as_slice()),
                        "a frame is not the bytes it came from"
                    );
                    consumed += bytes.len();
                    got.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    // The error comes from the header just after the last frame.
                    let header: [u8; frame::HEADER] = pushed[consumed..consumed + frame::HEADER]
                        .try_into()
                        .expect("a header");
                    assert_eq!(FrameDecoder::announced(header), Err(e.clone()));
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            assert_eq!(d.buffered(), pushed.len() - consumed, "buffered bytes miscounted");
        }
    }
    let mut whole = FrameDecoder::new();
    whole.push(&pushed);
    let mut again = Vec::new();
    let error = loop {
        match whole.next_frame() {
            Ok(Some(f)) => again.push(f),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert_eq!(again, got, "the frames depend on how the stream was cut");
    assert_eq!(error, failed, "the error depends on how the stream was cut");
}

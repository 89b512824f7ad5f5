//! Frames: the unit of the wire protocol.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: one type byte and
//! a payload. The length is checked against [`MAX_FRAME`] before anything is
//! allocated, so a peer announcing a huge frame costs us nothing.

use thiserror::Error;

/// The largest frame accepted, type byte and payload together (32 MiB): room for
/// the first sync of many years of history in one message.
pub const MAX_FRAME: usize = 32 * 1024 * 1024;

/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// A decoded frame: its type and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The announced length is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// A frame with no type byte.
    #[error("empty frame")]
    Empty,
}

/// Encodes a frame.
pub fn encode(kind: u8, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = payload.len() + 1;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reassembles frames from a byte stream delivered in arbitrary pieces.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The length announced by the next frame header, once its header is here;
    /// checked against the limit. A driver reading exact lengths uses this.
    pub fn announced(header: [u8; HEADER]) -> Result<usize, FrameError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            Err(FrameError::TooLarge(len))
        } else if len == 0 {
            Err(FrameError::Empty)
        } else {
            Ok(len)
        }
    }

    /// The next complete frame, if one is buffered. An error is final: the
    /// stream cannot be resynchronised.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER];
        h.copy_from_slice(header);
        let len = FrameDecoder::announced(h)?;
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let kind = self.buf[HEADER];
        let payload = self.buf[HEADER + 1..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(Frame { kind, payload }))
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_and_empty_frames_are_refused_from_the_header() {
        let mut d = FrameDecoder::new();
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(u32::MAX as usize)));
        let mut d = FrameDecoder::new();
        d.push(&0u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        assert!(encode(1, &vec![0; MAX_FRAME]).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_any_split(
            frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            cut in 1usize..64,
        ) {
            let mut wire = Vec::new();
            for (k, p) in &frames {
                let e = encode(*k, p).unwrap();
                prop_assert_eq!(e.len(), HEADER + 1 + p.len());
                wire.extend(e);
            }
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(cut) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push((f.kind, f.payload));
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}

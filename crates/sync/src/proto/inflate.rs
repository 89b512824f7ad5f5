//! A bound on how far a peer's automerge bytes expand before automerge sees
//! them.
//!
//! Automerge 0.12 inflates DEFLATE-compressed data with no limit: a compressed
//! change chunk (type 2, whose whole body is deflated) and every column of a
//! document chunk (type 0) whose column spec carries the deflate bit. DEFLATE
//! expands up to about 1,000 times, so a 32 MiB frame or bundle could ask for
//! tens of gigabytes, and a failed allocation aborts the process (no
//! `catch_unwind` stops it) before any signature is looked at.
//!
//! [`check`] walks every chunk the way automerge will read it and inflates each
//! deflated part into a small fixed buffer, counting, until the data's total
//! would pass [`MAX_EXPANDED`]. It allocates nothing in proportion to what it
//! inflates, and refuses what automerge would not take anyway (automerge's own
//! bundle chunks, unknown chunk types, lengths past the end) rather than guess
//! how automerge would read it.
//!
//! Layouts (from automerge's `storage/chunk.rs`, `storage/document.rs`,
//! `storage/columns/raw_column.rs`):
//!
//! ```text
//! chunk    = magic [85 6f 4a 83] | checksum (4) | type u8 | length uleb | body
//! type 1   = change: read as is (automerge refuses compressed columns in it)
//! type 2   = compressed change: body = DEFLATE(change body)
//! type 0   = document: body = actors (uleb count, each uleb length + bytes)
//!            | heads (uleb count, 32 bytes each)
//!            | change columns | op columns (each: uleb count, then per column
//!              spec uleb u32 (bit 3 = deflated) and length uleb)
//!            | change column data | op column data | head indices
//! ```

use std::io::Read;

use super::verify::VerifyError;

/// The most bytes a peer's automerge data may occupy once expanded, counted
/// over one sync message, one bundle or one document: the bytes as they came
/// plus everything inflated from them (automerge keeps both).
///
/// Honest data is far inside it: a five-year history (69,500 changes) saves to
/// 0.34 MB and counts 1.65 MB (its columns inflate fourfold), 160 times under
/// the bound; small documents of repetitive text inflate up to about tenfold.
/// A saved document that fills the largest frame or bundle (32 MiB, nearly a
/// hundred times the five-year one) would still pass at eightfold. What the bound lets
/// through is what automerge may allocate for one message: a few times 256 MiB
/// for the buffers it copies through, against the tens of gigabytes a 32 MiB
/// bomb asks for. Checking costs one streaming inflate: 3 ms for the five-year
/// document, against 690 ms for automerge to load it.
pub const MAX_EXPANDED: u64 = 256 << 20;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
/// The bit of a column spec that says its data is deflated.
const COLUMN_DEFLATED: u64 = 0b1000;
/// The buffer inflated data passes through, counted and dropped.
const SCRATCH: usize = 64 * 1024;

/// Checks that `data` (concatenated automerge chunks) expands to at most
/// [`MAX_EXPANDED`] bytes; returns how many it expands to.
pub fn check(data: &[u8]) -> Result<u64, VerifyError> {
    check_all([data])
}

/// [`check`] over several pieces of data that arrive together (the chunks of
/// one sync message), with one bound for all of them.
pub fn check_all<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<u64, VerifyError> {
    check_all_within(pieces, MAX_EXPANDED)
}

/// [`check_all`] with another bound (tests use small ones).
pub fn check_all_within<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limit: u64,
) -> Result<u64, VerifyError> {
    let mut budget = Budget {
        used: 0,
        limit,
        scratch: Vec::new(),
    };
    for data in pieces {
        let mut rest = data;
        while !rest.is_empty() {
            rest = budget.chunk(rest)?;
        }
    }
    Ok(budget.used)
}

fn malformed(what: &str) -> VerifyError {
    VerifyError::Malformed(what.to_string())
}

/// What the data expanded to so far, against its bound.
struct Budget {
    used: u64,
    limit: u64,
    /// Allocated at the first deflated part, reused for every other.
    scratch: Vec<u8>,
}

impl Budget {
    fn add(&mut self, bytes: u64) -> Result<(), VerifyError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(VerifyError::Malformed(format!(
                "compressed data expands beyond {} MiB",
                self.limit >> 20
            )));
        }
        Ok(())
    }

    /// Inflates `deflated` into the scratch buffer, counting, and stops as
    /// soon as the bound is passed.
    fn inflate(&mut self, deflated: &[u8]) -> Result<(), VerifyError> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; SCRATCH];
        }
        // The same decoder automerge uses, so both read the same stream the
        // same way (its end, and whatever follows it, alike).
        let mut decoder = flate2::bufread::DeflateDecoder::new(deflated);
        loop {
            let n = match decoder.read(&mut self.scratch) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(malformed("compressed data does not inflate")),
            };
            self.add(n as u64)?;
        }
    }

    /// Checks the chunk `data` starts with; returns what follows it.
    fn chunk<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], VerifyError> {
        if data.len() < 9 || data[..4] != MAGIC {
            return Err(malformed("a chunk does not start with automerge's magic bytes"));
        }
        let kind = data[8];
        let mut header = Reader(&data[9..]);
        let len = header.uleb()?;
        let body = header.take(len)?;
        let rest = header.0;
        // The chunk as it came is kept too.
        self.add((data.len() - rest.len()) as u64)?;
        match kind {
            CHUNK_CHANGE => {}
            CHUNK_COMPRESSED => self.inflate(body)?,
            CHUNK_DOCUMENT => self.document(body)?,
            other => {
                return Err(VerifyError::Malformed(format!(
                    "chunk type {other} is not accepted"
                )));
            }
        }
        Ok(rest)
    }

    /// Inflates the deflated columns of a document chunk's `body`.
    fn document(&mut self, body: &[u8]) -> Result<(), VerifyError> {
        let mut r = Reader(body);
        // Each actor or head read consumes input, so a count cannot make these
        // loops outlast the body.
        let actors = r.uleb()?;
        for _ in 0..actors {
            let len = r.uleb()?;
            r.take(len)?;
        }
        let heads = r.uleb()?;
        r.take(
            heads
                .checked_mul(32)
                .ok_or_else(|| malformed("a document's heads overflow"))?,
        )?;
        let mut columns = r.columns()?;
        columns.extend(r.columns()?);
        for (spec, len) in columns {
            let data = r.take(len)?;
            if spec & COLUMN_DEFLATED != 0 {
                self.inflate(data)?;
            }
        }
        Ok(())
    }
}

/// Reads automerge's encodings off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next `len` bytes.
    fn take(&mut self, len: u64) -> Result<&'a [u8], VerifyError> {
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= self.0.len())
            .ok_or_else(|| malformed("a length runs past the end of the chunk"))?;
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    /// An unsigned LEB128 number, refused as automerge refuses it (overlong,
    /// or past 64 bits): a number read differently from automerge could hide
    /// a deflated column from this check.
    fn uleb(&mut self) -> Result<u64, VerifyError> {
        let bad = || malformed("a number in a chunk is badly encoded");
        let mut value: u64 = 0;
        for (i, b) in self.0.iter().enumerate() {
            let shift = 7 * i as u32;
            if shift >= 64 {
                return Err(bad());
            }
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(bad());
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                if i > 0 && *b == 0 {
                    return Err(bad());
                }
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(bad())
    }

    /// A list of column specs and lengths.
    fn columns(&mut self) -> Result<Vec<(u64, u64)>, VerifyError> {
        let count = self.uleb()?;
        let mut out = Vec::new();
        for _ in 0..count {
            let spec = self.uleb()?;
            if spec > u64::from(u32::MAX) {
                return Err(malformed("a column spec is too large"));
            }
            out.push((spec, self.uleb()?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    /// A document with enough history that automerge deflates its columns.
    fn honest_document() -> Automerge {
        let mut doc = Automerge::new();
        for i in 0..300 {
            let mut tx = doc.transaction();
            tx.put(
                ROOT,
                format!("key {}", i % 40),
                format!("a value written at step {i}"),
            )
            .unwrap();
            tx.commit();
        }
        doc
    }

    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0; 4]);
        out.push(kind);
        let mut len = body.len() as u64;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            out.push(if len == 0 { b } else { b | 0x80 });
            if len == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn honest_documents_and_changes_pass_and_are_counted_inflated() {
        let doc = honest_document();
        let saved = doc.save();
        let plain = doc.save_nocompress();
        assert!(saved.len() < plain.len(), "the document has deflated columns");
        let total = check(&saved).unwrap();
        assert!(
            total > saved.len() as u64,
            "its columns were inflated ({total} from {})",
            saved.len()
        );
        assert!(total <= (saved.len() + plain.len()) as u64);
        assert_eq!(check(&plain).unwrap(), plain.len() as u64);
        let mut changes = Vec::new();
        for mut c in doc.get_changes(&[]) {
            changes.extend_from_slice(c.raw_bytes());
            // Automerge's own compressed form of a change (chunk type 2).
            changes.extend_from_slice(&c.bytes());
        }
        assert!(check(&changes).unwrap() >= changes.len() as u64);
        assert!(check(&[]).is_ok());
    }

    #[test]
    fn the_bound_counts_every_piece_together() {
        let body = deflate(&[0; 4096]);
        let compressed = chunk(CHUNK_COMPRESSED, &body);
        let one = check(&compressed).unwrap();
        assert_eq!(one, compressed.len() as u64 + 4096);
        let three = [&compressed[..], &compressed[..], &compressed[..]];
        assert_eq!(check_all_within(three, 3 * one).unwrap(), 3 * one);
        let err = check_all_within(three, 3 * one - 1).unwrap_err();
        assert!(err.to_string().contains("expands beyond"), "{err}");
    }

    #[test]
    fn a_deflated_document_column_is_inflated_under_the_bound() {
        let column = deflate(&[7; 100_000]);
        let mut body = vec![1, 16];
        body.extend([0xaa; 16]); // one actor
        body.push(0); // no heads
        body.extend([1, 0x08 | 0x01]); // one change column, deflated
        let mut len = column.len() as u64;
        while len >= 0x80 {
            body.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        body.push(len as u8);
        body.push(0); // no op columns
        body.extend(&column);
        let doc = chunk(CHUNK_DOCUMENT, &body);
        assert!(check(&doc).unwrap() >= 100_000);
        assert!(check_all_within([&doc[..]], 50_000).is_err());
        // The same bytes without the deflate bit are not inflated.
        let mut plain = body.clone();
        plain[20] = 0x01;
        assert!(check_all_within([&chunk(CHUNK_DOCUMENT, &plain)[..]], 50_000).is_ok());
    }

    #[test]
    fn what_automerge_would_read_differently_is_refused() {
        let bad = |data: &[u8]| check(data).is_err();
        // Automerge's own bundles, and unknown chunk types.
        assert!(bad(&chunk(3, &[0])));
        assert!(bad(&chunk(9, &[])));
        // Lengths past the end, at the chunk and at a column.
        let mut short = chunk(CHUNK_CHANGE, &[1, 2, 3]);
        short.pop();
        assert!(bad(&short));
        assert!(bad(&chunk(CHUNK_DOCUMENT, &[0, 0, 1, 0x09, 5, 0, 1, 2])));
        // Counts that would run past the body.
        assert!(bad(&chunk(CHUNK_DOCUMENT, &[0xff, 0xff, 0xff, 0x7f])));
        assert!(bad(&chunk(CHUNK_DOCUMENT, &[0, 0x80, 0x80, 0x80, 0x80, 0x10])));
        // Overlong and oversized numbers.
        assert!(bad(&chunk(CHUNK_DOCUMENT, &[0x80, 0x00])));
        assert!(bad(&chunk(
            CHUNK_DOCUMENT,
            &[0, 0, 1, 0x88, 0x80, 0x80, 0x80, 0x80, 0x01, 0]
        )));
        let mut r = Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(r.uleb().unwrap(), u64::MAX);
        assert!(
            Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .uleb()
                .is_err()
        );
        assert!(Reader(&[0xff; 11]).uleb().is_err());
        // Not a deflate stream.
        assert!(bad(&chunk(CHUNK_COMPRESSED, &[0xff; 8])));
        // Garbage between chunks.
        let mut two = chunk(CHUNK_CHANGE, &[1]);
        two.push(0);
        assert!(bad(&two));
    }
}

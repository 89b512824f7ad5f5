//! The change log and snapshots: loading the document, appending changes, and
//! compaction.

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use duet_model::{Attestation, DeviceId};
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// A snapshot is written once at least this many changes have been appended
/// since the last one, and their bytes reach [`COMPACT_TAIL_SHARE`] of it.
pub const COMPACT_EVERY: i64 = 500;

/// The tail of the log, in bytes, that makes a snapshot due: one eighth of the
/// last snapshot. Rewriting the whole document every 500 changes made the bytes
/// written per edit grow with the history; in proportion to its size they stay
/// flat, and loading never replays more than an eighth of the document.
pub const COMPACT_TAIL_SHARE: i64 = 8;

/// The document as of change `seq` of the log.
pub(crate) struct Cached {
    doc: Automerge,
    seq: i64,
}

impl Cached {
    pub(crate) fn empty(device: DeviceId) -> Cached {
        Cached {
            doc: Automerge::new().with_actor(device.actor()),
            seq: 0,
        }
    }
}

/// What a write's closure works on.
pub struct Write<'a> {
    /// The document, caught up with the log.
    pub doc: &'a mut Automerge,
    /// Verified attestations to store with the changes.
    pub attestations: Vec<Attestation>,
    /// The changes the closure added to the document, when it knows them (a
    /// sync message does): the store then appends these instead of rebuilding
    /// them from the document, which costs as much as encoding them again.
    /// Ignored unless their number matches what the document gained.
    pub applied: Vec<Change>,
    /// When set, replaces the changes and attestations kept waiting (see
    /// [`Store::pending`]) in the same transaction.
    pub pending: Option<crate::Pending>,
    /// The saved document the closure made an empty document from (a new
    /// device's first sync takes the history it received whole): the store
    /// keeps these bytes as one entry of the log, and as the snapshot, instead
    /// of one entry per change. Ignored unless the document was empty before
    /// the closure. The closure vouches that the bytes load to the document.
    pub document: Option<Vec<u8>>,
}

/// One change of the log, for `duet log`.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Its position in this device's log.
    pub seq: i64,
    /// The change hash.
    pub hash: ChangeHash,
    /// The device that made it (its automerge actor), if the actor is a device key.
    pub device: Option<DeviceId>,
    /// The change's own timestamp, in seconds since the epoch.
    pub time: i64,
    /// The change's message (an operation name such as "add issue 3fa9c1").
    pub message: Option<String>,
    /// The number of operations in it.
    pub ops: usize,
}

/// Counts for `duet status`.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Changes in the log.
    pub changes: i64,
    /// Changes since the latest snapshot.
    pub since_snapshot: i64,
    /// Bytes of the latest snapshot.
    pub snapshot_bytes: i64,
}

impl Store {
    /// Reads the current document.
    pub fn read<T>(&mut self, f: impl FnOnce(&Automerge) -> T) -> Result<T, StoreError> {
        self.catch_up()?;
        match &self.cache {
            Some(c) => Ok(f(&c.doc)),
            None => Err(self.damaged("the document could not be loaded")),
        }
    }

    /// Makes a change: runs `f` on the current document inside a write
    /// transaction and appends every change `f` made to the log. If `f` fails,
    /// nothing is written; if the write fails, `f`'s changes are discarded.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Automerge) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_with(|w| f(w.doc))
    }

    /// Like [`Store::write`], for the sync layer: `f` may also record
    /// attestations (signatures by other devices over their latest changes),
    /// which are stored in the same transaction as the changes they vouch for.
    pub fn write_with<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Write<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        // `rusqlite::Transaction` borrows the connection while catching up needs
        // `&mut self`, so the transaction is driven with plain statements.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        let outcome = self.write_locked(f);
        match outcome {
            Ok(value) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.cache = None;
                    Err(self.err(e).into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // The in-memory document may hold changes that were not stored.
                self.cache = None;
                Err(e)
            }
        }
    }

    fn write_locked<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Write<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.catch_up()?;
        let Some(cached) = self.cache.as_mut() else {
            return Err(self.damaged("the document could not be loaded").into());
        };
        let before = cached.doc.get_heads();
        let count_before = cached.doc.stats().num_changes;
        let mut w = Write {
            doc: &mut cached.doc,
            attestations: Vec::new(),
            applied: Vec::new(),
            pending: None,
            document: None,
        };
        let value = f(&mut w)?;
        let Write {
            mut attestations,
            applied,
            pending,
            document,
            ..
        } = w;
        let gained = cached.doc.stats().num_changes.saturating_sub(count_before);
        let whole = document.filter(|_| count_before == 0 && gained > 0);
        let from_sync = !applied.is_empty() || whole.is_some();
        let new: Vec<Change> = if whole.is_some() {
            Vec::new()
        } else if gained > 0 && applied.len() as u64 == gained {
            applied
        } else {
            cached.doc.get_changes(&before)
        };
        // Sign this device's newest change: one signature vouches for all of the
        // device's changes before it.
        let me = self.device.device_id();
        if let Some(tip) = new
            .iter()
            .filter(|c| me.is_actor(c.actor_id()))
            .max_by_key(|c| c.seq())
        {
            attestations.push(self.device.attest(&tip.hash()));
        }
        let seqs: Vec<(Attestation, u64)> = attestations
            .into_iter()
            .filter_map(|a| cached.doc.get_change_meta_by_hash(&a.hash).map(|c| (a, c.seq)))
            .collect();
        let now = now_ms();
        let mut seq = cached.seq;
        {
            let mut insert = self
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO changes (hash, actor, bytes, stored_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| StoreError::sqlite(&self.path, e))?;
            for change in &new {
                insert
                    .execute(params![
                        change.hash().0.as_slice(),
                        change.actor_id().to_bytes(),
                        change.raw_bytes(),
                        now
                    ])
                    .map_err(|e| StoreError::sqlite(&self.path, e))?;
            }
        }
        if let Some(bytes) = &whole {
            seq = self.append_document(bytes, gained, now)?;
        }
        if !new.is_empty() {
            seq = self
                .conn
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
        }
        if let Some(c) = self.cache.as_mut() {
            c.seq = seq;
        }
        for (a, change_seq) in seqs {
            self.put_attestation(&a, change_seq)?;
        }
        if let Some(pending) = pending {
            self.replace_pending(&pending)?;
        }
        // A sync's write stays short: compaction waits for a local write that
        // made a change, or for the caller's `compact_if_due` once the session
        // is idle. (A sync message that brings nothing is a write that adds
        // nothing: compacting there put a whole save on the path of a
        // reconnect's last acknowledgement.)
        if !from_sync && !new.is_empty() {
            self.maybe_compact()?;
        }
        Ok(value)
    }

    /// Loads what the log holds beyond the cached document (everything, the first
    /// time).
    fn catch_up(&mut self) -> Result<(), StoreError> {
        if self.cache.is_none() {
            self.cache = Some(self.load()?);
        }
        let Some(seq) = self.cache.as_ref().map(|c| c.seq) else {
            return Ok(());
        };
        let (tail, last) = self.entries_after(seq)?;
        if let Some(c) = self.cache.as_mut() {
            if !tail.is_empty() {
                // Automerge panics on some malformed changes; a damaged log must
                // give a clear error instead.
                let doc = &mut c.doc;
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(doc, tail)));
                let detail = match applied {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("a stored change does not apply: {e}")),
                    Err(_) => Some("a stored change is malformed".to_string()),
                };
                if let Some(detail) = detail {
                    self.cache = None;
                    return Err(StoreError::Damaged {
                        path: self.path.clone(),
                        detail,
                    });
                }
            }
            c.seq = last.max(c.seq);
        }
        Ok(())
    }

    /// Loads the document: the latest snapshot, or (if there is none, or it is
    /// damaged) the whole log.
    fn load(&mut self) -> Result<Cached, StoreError> {
        let device = self.device_id()?;
        let snapshot: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT upto_seq, bytes FROM snapshots ORDER BY upto_seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some((upto, bytes)) = snapshot {
            let loaded = std::panic::catch_unwind(|| Automerge::load(&bytes))
                .unwrap_or_else(|_| Err(automerge::AutomergeError::Fail));
            match loaded {
                Ok(doc) => {
                    return Ok(Cached {
                        doc: doc.with_actor(device.actor()),
                        seq: upto,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.path.display(), "snapshot damaged; rebuilding from the change log");
                    self.conn
                        .execute("DELETE FROM snapshots", [])
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(Cached::empty(device))
    }

    /// The entries of the log after `seq`, decoded and checked, with the last seq.
    fn entries_after(&self, seq: i64) -> Result<(Vec<Entry>, i64), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, hash, bytes FROM changes WHERE seq > ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([seq]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut last = seq;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let n: i64 = row.get(0).map_err(|e| self.err(e))?;
            let hash: Vec<u8> = row.get(1).map_err(|e| self.err(e))?;
            let bytes: Vec<u8> = row.get(2).map_err(|e| self.err(e))?;
            out.push(self.entry(n, &hash, bytes)?);
            last = n;
        }
        Ok((out, last))
    }

    /// Decodes entry `seq` of the log and checks it against its stored hash.
    fn entry(&self, seq: i64, hash: &[u8], bytes: Vec<u8>) -> Result<Entry, StoreError> {
        if is_document(&bytes) {
            if document_hash(&bytes).as_slice() != hash {
                return Err(self.damaged(format!("entry {seq} of the log does not match its hash")));
            }
            return Ok(Entry::Document(bytes));
        }
        let change = Change::from_bytes(bytes)
            .map_err(|e| self.damaged(format!("change {seq} of the log is unreadable: {e}")))?;
        if change.hash().0.as_slice() != hash {
            return Err(self.damaged(format!("change {seq} of the log does not match its hash")));
        }
        Ok(Entry::Change(Box::new(change)))
    }

    /// Appends a whole saved document of `count` changes as one entry that
    /// takes the log's next `count` positions, and keeps it as the snapshot
    /// too (it is one already). Returns the entry's seq.
    fn append_document(&self, bytes: &[u8], count: u64, now: i64) -> Result<i64, StoreError> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let seq: i64 = self
            .conn
            .query_row(
                "INSERT INTO changes (seq, hash, actor, bytes, stored_at, count)
                 VALUES ((SELECT COALESCE(MAX(seq), 0) FROM changes) + ?1, ?2, x'', ?3, ?4, ?1)
                 RETURNING seq",
                params![count, document_hash(bytes).as_slice(), bytes, now],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        self.put_snapshot(seq, bytes)?;
        Ok(seq)
    }

    fn maybe_compact(&mut self) -> Result<bool, StoreError> {
        if !self.compaction_due()? {
            return Ok(false);
        }
        self.write_snapshot()?;
        Ok(true)
    }

    fn compaction_due(&self) -> Result<bool, StoreError> {
        let Some(c) = self.cache.as_ref() else {
            return Ok(false);
        };
        let (upto, size): (i64, i64) = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(upto_seq), 0),
                        COALESCE((SELECT length(bytes) FROM snapshots ORDER BY upto_seq DESC LIMIT 1), 0)
                 FROM snapshots",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        if c.seq - upto < COMPACT_EVERY {
            return Ok(false);
        }
        let tail: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(SUM(length(bytes)), 0) FROM changes WHERE seq > ?1",
                [upto],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(tail.saturating_mul(COMPACT_TAIL_SHARE) >= size)
    }

    /// Writes a snapshot if one is due (see [`COMPACT_EVERY`]); returns whether
    /// it did. For callers that apply synced changes, which do not compact
    /// inside their writes, once the session is idle or over.
    pub fn compact_if_due(&mut self) -> Result<bool, StoreError> {
        self.caught_up_transaction(Store::maybe_compact)
    }

    /// Writes a snapshot of the cached document and drops older ones. Runs inside
    /// the caller's write transaction.
    fn write_snapshot(&self) -> Result<(), StoreError> {
        let Some(c) = self.cache.as_ref() else {
            return Ok(());
        };
        self.put_snapshot(c.seq, &c.doc.save())
    }

    /// Stores `bytes` as the snapshot of the log up to `upto` and drops older ones.
    fn put_snapshot(&self, upto: i64, bytes: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO snapshots (upto_seq, bytes, created_at) VALUES (?1, ?2, ?3)",
                params![upto, bytes, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute("DELETE FROM snapshots WHERE upto_seq < ?1", [upto])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Compacts now: writes a snapshot of the current document.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.caught_up_transaction(|s| s.write_snapshot())
    }

    /// Runs `f` in a write transaction on a caught-up document (for compaction;
    /// edits go through [`Store::write_with`]).
    fn caught_up_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        match self.catch_up().and_then(|()| f(self)) {
            Ok(value) => {
                self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The log, newest first, at most `limit` changes. The changes of an entry
    /// that holds a whole document are listed in the order automerge applied
    /// them, at the positions the entry takes.
    pub fn log(&self, limit: Option<usize>) -> Result<Vec<LogEntry>, StoreError> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut stmt = self
            .conn
            .prepare("SELECT seq, hash, bytes FROM changes ORDER BY seq DESC")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(row) = rows.next().map_err(|e| self.err(e))? else {
                break;
            };
            let seq: i64 = row.get(0).map_err(|e| self.err(e))?;
            let hash: Vec<u8> = row.get(1).map_err(|e| self.err(e))?;
            let bytes: Vec<u8> = row.get(2).map_err(|e| self.err(e))?;
            match self.entry(seq, &hash, bytes)? {
                Entry::Change(change) => out.push(LogEntry {
                    seq,
                    hash: change.hash(),
                    device: DeviceId::from_actor(change.actor_id()),
                    time: change.timestamp(),
                    message: change.message().map(str::to_string),
                    ops: change.len(),
                }),
                Entry::Document(bytes) => {
                    let doc = load_document(&bytes)
                        .map_err(|e| self.damaged(format!("entry {seq} of the log does not load: {e}")))?;
                    let changes = doc.get_changes_meta(&[]);
                    let first = seq - changes.len() as i64 + 1;
                    for (i, c) in changes.iter().enumerate().rev().take(limit - out.len()) {
                        out.push(LogEntry {
                            seq: first + i as i64,
                            hash: c.hash,
                            device: DeviceId::from_actor(&c.actor),
                            time: c.timestamp,
                            message: c.message.as_deref().map(str::to_string),
                            ops: (c.max_op + 1).saturating_sub(c.start_op) as usize,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Counts of the log and snapshots.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.conn
            .query_row(
                "SELECT (SELECT COALESCE(SUM(count), 0) FROM changes),
                        (SELECT COALESCE(SUM(count), 0) FROM changes
                          WHERE seq > (SELECT COALESCE(MAX(upto_seq), 0) FROM snapshots)),
                        (SELECT COALESCE(SUM(length(bytes)), 0) FROM snapshots)",
                [],
                |r| {
                    Ok(Stats {
                        changes: r.get(0)?,
                        since_snapshot: r.get(1)?,
                        snapshot_bytes: r.get(2)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }
}

/// One entry of the log, decoded.
enum Entry {
    /// One change.
    Change(Box<Change>),
    /// A whole saved document.
    Document(Vec<u8>),
}

/// Applies entries of the log to `doc` in order. A document entry becomes the
/// document when it is empty (always, as the log writes them: see
/// [`Write::document`]), and adds its changes otherwise.
fn apply(doc: &mut Automerge, entries: Vec<Entry>) -> Result<(), automerge::AutomergeError> {
    let mut changes = Vec::new();
    for entry in entries {
        match entry {
            Entry::Change(c) => changes.push(*c),
            Entry::Document(bytes) => {
                doc.apply_changes(std::mem::take(&mut changes))?;
                let whole = load_document(&bytes)?;
                if doc.get_heads().is_empty() {
                    *doc = whole.with_actor(doc.get_actor().clone());
                } else {
                    doc.apply_changes(whole.get_changes(&[]))?;
                }
            }
        }
    }
    doc.apply_changes(changes)
}

/// Loads a saved document with automerge's checks (every change's hash
/// recomputed, nothing missing).
fn load_document(bytes: &[u8]) -> Result<Automerge, automerge::AutomergeError> {
    let options = automerge::LoadOptions::new()
        .on_partial_load(automerge::OnPartialLoad::Error)
        .verification_mode(automerge::VerificationMode::Check);
    Automerge::load_with_options(bytes, options)
}

/// True if `bytes` start as automerge's document chunk (magic, checksum, type 0)
/// rather than a change chunk.
fn is_document(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[..4] == [0x85, 0x6f, 0x4a, 0x83] && bytes[8] == 0
}

/// The hash a document entry is checked against.
fn document_hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

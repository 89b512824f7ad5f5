//! Offline bundles: the couple's signed changes, sealed with the space key,
//! as bytes to carry (a file on a USB stick, an email attachment) or to leave
//! at the relay.
//!
//! A bundle is verified exactly like a sync message: signatures, the
//! membership of every author, and placement (`duet_sync::proto::verify`).
//! Changes whose dependencies have not arrived wait in the store's `pending`
//! tables for a later bundle or sync, so bundles can be imported in any order
//! and more than once; a bundle that fails its seal or any check is refused
//! whole, with nothing applied.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, Change, ChangeHash};
use crypto_box::aead::OsRng;
use duet_model::Seat;
use duet_store::Pending;
use duet_sync::proto::bundle::{self, BundleBody, BundleError};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::home::{Home, now_ms};

/// What to put in a bundle.
#[derive(Debug, Clone, Default)]
pub enum Since {
    /// The whole record.
    #[default]
    Everything,
    /// What the partner's devices are not known to have: changes after the
    /// newest change each of their devices made and after what each last
    /// acknowledged in a sync.
    PartnerSaw,
    /// Changes after these heads (those this home knows).
    Heads(Vec<ChangeHash>),
}

/// A bundle made by [`Home::export_bundle`].
#[derive(Debug, Clone)]
pub struct ExportedBundle {
    /// The sealed bytes.
    pub bytes: Vec<u8>,
    /// Changes inside.
    pub changes: usize,
    /// The heads of this home when the bundle was made: everything up to
    /// them is inside or was excluded by `since`.
    pub heads: Vec<ChangeHash>,
}

/// What importing a bundle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Changes in the bundle.
    pub changes: usize,
    /// Changes newly applied (from this bundle or earlier ones that waited).
    pub applied: usize,
    /// Changes this home already had.
    pub already_had: usize,
    /// Changes that wait for their dependencies (from any bundle).
    pub waiting: usize,
    /// The device that sealed the bundle (its id, short).
    pub from: String,
    /// The heads of the changes applied (for the relay's position).
    #[serde(skip)]
    pub heads: Vec<ChangeHash>,
}

/// The heads of `changes`: those no other change among them depends on.
fn heads_of(changes: &[Change]) -> Vec<ChangeHash> {
    let deps: HashSet<ChangeHash> = changes.iter().flat_map(|c| c.deps().iter().copied()).collect();
    changes
        .iter()
        .map(|c| c.hash())
        .filter(|h| !deps.contains(h))
        .collect()
}

impl From<BundleError> for Error {
    fn from(e: BundleError) -> Self {
        Error::Bundle(e.to_string())
    }
}

/// The heads `doc` holds among `hashes`: unknown hashes are dropped, since
/// automerge would treat them as "has nothing".
pub(crate) fn known(doc: &Automerge, hashes: impl IntoIterator<Item = ChangeHash>) -> Vec<ChangeHash> {
    let mut out: Vec<ChangeHash> = hashes
        .into_iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    out.sort_unstable();
    out
}

impl Home {
    /// What the partner's devices are known to hold: the newest change of each
    /// of their devices (a device saw everything its change depends on) and
    /// the heads each acknowledged in its last sync with this device.
    pub fn partner_seen_heads(&mut self) -> Result<Vec<ChangeHash>> {
        let partner: Seat = self.seat().other();
        let members = self.membership()?;
        let devices: Vec<_> = members
            .members()
            .iter()
            .filter(|m| m.seat == partner)
            .map(|m| m.id)
            .collect();
        let mut seen = Vec::new();
        for d in &devices {
            if let Some(state) = self.store_mut().sync_state(d)?
                && let Ok(state) = automerge::sync::State::decode(&state)
            {
                seen.extend(state.shared_heads);
            }
        }
        let newest = self.read(|doc| {
            // Metadata only: building every change would cost several times more.
            let mut tips: HashMap<Vec<u8>, (u64, ChangeHash)> = HashMap::new();
            for c in doc.get_changes_meta(&[]) {
                if devices.iter().any(|d| d.is_actor(&c.actor)) {
                    let e = tips.entry(c.actor.to_bytes().to_vec()).or_insert((0, c.hash));
                    if c.seq >= e.0 {
                        *e = (c.seq, c.hash);
                    }
                }
            }
            tips.into_values().map(|(_, h)| h).collect::<Vec<_>>()
        })?;
        seen.extend(newest);
        self.read(|doc| known(doc, seen))
    }

    /// Seals this home's changes (all, or those after `since`) into a bundle
    /// only the space's member devices can open.
    pub fn export_bundle(&mut self, since: Since) -> Result<ExportedBundle> {
        let ring = self.ensure_space_keys()?;
        let key = ring
            .sealing_key()
            .ok_or_else(|| {
                Error::Bundle("this device holds no space key: it is not an active member".into())
            })?
            .clone();
        let after = match since {
            Since::Everything => Vec::new(),
            Since::PartnerSaw => self.partner_seen_heads()?,
            Since::Heads(h) => self.read(|doc| known(doc, h))?,
        };
        let space_id = self.space_id()?;
        let attestations = self.store_mut().attestations()?;
        let sender = self.device_id();
        let (automerge, changes, heads) = self.read(|doc| {
            let (bytes, count) = if after.is_empty() {
                (doc.save(), doc.get_changes_meta(&[]).len())
            } else {
                (doc.save_after(&after), doc.get_changes_meta(&after).len())
            };
            (bytes, count, doc.get_heads())
        })?;
        let recipients = self.membership()?.active();
        let body = BundleBody {
            space_id,
            sender,
            created_ms: u64::try_from(now_ms()).unwrap_or(0),
            automerge,
            attestations,
        };
        let me = self.store_mut().device_secret()?;
        let bytes = bundle::seal(&body, &me, &key, &recipients, &mut OsRng)?;
        Ok(ExportedBundle {
            bytes,
            changes,
            heads,
        })
    }

    /// Opens, verifies and applies a bundle. Applying the same bundle again,
    /// or bundles out of order, is safe; a bundle that is damaged, altered,
    /// for another space, or carries a change that fails verification is
    /// refused whole and nothing is applied.
    pub fn import_bundle(&mut self, bytes: &[u8]) -> Result<ImportReport> {
        let space_id = self.space_id()?;
        let me = self.store_mut().device_secret()?;
        let ring = self.keyring()?;
        let opened = bundle::open(bytes, &space_id, &ring, &me)?;
        let body = opened.body;
        let pending = self.store_mut().pending()?;
        let founder = self.founder()?;
        let report = self.store_mut().write_with(|w| -> Result<ImportReport> {
            let mut waiting: HashMap<ChangeHash, Change> =
                pending.changes.into_iter().map(|c| (c.hash(), c)).collect();
            let mut verified = pending.attestations;
            let imported = bundle::import(w.doc, &body, founder, &mut waiting, &mut verified)?;
            let applied = imported.applied.len();
            let heads = heads_of(&imported.applied);
            w.attestations.extend(imported.attestations);
            w.applied = imported.applied;
            // Signatures still useful: those naming a change not yet held.
            verified.retain(|a| w.doc.get_change_meta_by_hash(&a.hash).is_none());
            let waiting_now = waiting.len();
            w.pending = Some(Pending {
                changes: waiting.into_values().collect(),
                attestations: verified,
            });
            Ok(ImportReport {
                changes: imported.received,
                applied,
                already_had: imported.already_held,
                waiting: waiting_now,
                from: body.sender.short(),
                heads,
            })
        })?;
        if report.applied > 0 {
            self.notify_changed();
        }
        Ok(report)
    }
}

//! Checks on what a peer sends before it counts: every change well formed, made
//! by a member device that was not revoked at the time, and vouched for by that
//! device's signature.
//!
//! Signatures are per device, not per change: an [`Attestation`] signs a device's
//! newest change, and automerge changes name their dependencies by hash, so it
//! vouches for every change of that device below it.
//!
//! Received changes wait in their session until they can be placed ([`place`]):
//! every dependency held or placed with them, and each reached from an
//! attestation by its own author whose change is placed too. Automerge itself
//! never holds a change back, so nothing unverified ever sits in the document,
//! in what it saves, or in what it sends. A change that waits is not an error
//! (its dependencies or its signature may come in a later message, or from
//! another device); a change nothing received can ever vouch for is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

/// Maps and sets keyed by change hashes inside placement, which handles every
/// change of a history at once on a first sync: foldhash's randomly seeded
/// hashing is several times faster than SipHash on 32-byte keys, and its
/// per-process seed keeps a peer from choosing hashes that collide.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;
type FastSet<K> = HashSet<K, foldhash::quality::RandomState>;

use automerge::{ActorId, Automerge, Change, ChangeHash, ChangeMetadata};
use duet_model::authority::Judge;
use duet_model::{Attestation, ChangeRefusal, DeviceId};

/// What placement and the membership check read of a change: its author, its
/// place in the author's sequence and its dependencies. A received [`Change`],
/// or the [`ChangeMetadata`] of a change in a document that arrived whole
/// (which needs no change rebuilt to be checked).
pub trait ChangeNode {
    /// The author (a device key, for a change a member made).
    fn actor(&self) -> &ActorId;
    /// The change's number in its author's sequence.
    fn seq(&self) -> u64;
    /// The hashes of the changes it depends on.
    fn deps(&self) -> &[ChangeHash];
}

impl ChangeNode for Change {
    fn actor(&self) -> &ActorId {
        self.actor_id()
    }
    fn seq(&self) -> u64 {
        Change::seq(self)
    }
    fn deps(&self) -> &[ChangeHash] {
        Change::deps(self)
    }
}

impl<C: ChangeNode + ?Sized> ChangeNode for &C {
    fn actor(&self) -> &ActorId {
        (**self).actor()
    }
    fn seq(&self) -> u64 {
        (**self).seq()
    }
    fn deps(&self) -> &[ChangeHash] {
        (**self).deps()
    }
}

impl ChangeNode for ChangeMetadata<'_> {
    fn actor(&self) -> &ActorId {
        &self.actor
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn deps(&self) -> &[ChangeHash] {
        &self.deps
    }
}

/// Why received changes are refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A chunk of the automerge message is not well formed.
    #[error("malformed change data: {0}")]
    Malformed(String),
    /// An attestation's signature is wrong (forged or tampered).
    #[error("a change signature from device {0} does not verify (forged or tampered)")]
    BadSignature(String),
    /// A change no valid signature vouches for.
    #[error("a change by device {0} is not signed by it")]
    Unsigned(String),
    /// A change by a device that may not write.
    #[error(transparent)]
    Refused(#[from] ChangeRefusal),
}

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// Splits automerge chunk data into its chunks, checking each header, and
/// decodes them into changes (which also checks their checksums). A document
/// chunk is loaded with automerge's checked loading ([`load_document`]) and
/// yields its changes.
///
/// Automerge may panic on hostile bytes; callers facing a peer run this inside
/// `catch_unwind`.
pub fn parse_chunks(data: &[u8]) -> Result<Vec<Change>, VerifyError> {
    super::inflate::check(data)?;
    let bad = |what: &str| VerifyError::Malformed(what.to_string());
    let mut changes = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 9 || rest[..4] != MAGIC {
            return Err(bad("a chunk does not start with automerge's magic bytes"));
        }
        let kind = rest[8];
        let (len, used) = uleb(&rest[9..]).ok_or_else(|| bad("a chunk length is unreadable"))?;
        let header = 9 + used;
        let total = header
            .checked_add(usize::try_from(len).map_err(|_| bad("a chunk is too long"))?)
            .filter(|t| *t <= rest.len())
            .ok_or_else(|| bad("a chunk is longer than the data"))?;
        let chunk = &rest[..total];
        match kind {
            CHUNK_CHANGE | CHUNK_COMPRESSED => {
                let change =
                    Change::from_bytes(chunk.to_vec()).map_err(|e| VerifyError::Malformed(e.to_string()))?;
                changes.push(change);
            }
            CHUNK_DOCUMENT => changes.extend(load_document(chunk)?.get_changes(&[])),
            other => return Err(VerifyError::Malformed(format!("unknown chunk type {other}"))),
        }
        rest = &rest[total..];
    }
    Ok(changes)
}

/// Loads a whole saved document with automerge's checks: every change's hash
/// recomputed against the heads it records, nothing missing (a partial load is
/// an error).
///
/// Automerge may panic on hostile bytes; callers facing a peer run this inside
/// `catch_unwind`.
pub fn load_document(chunk: &[u8]) -> Result<Automerge, VerifyError> {
    super::inflate::check(chunk)?;
    let options = automerge::LoadOptions::new()
        .on_partial_load(automerge::OnPartialLoad::Error)
        .verification_mode(automerge::VerificationMode::Check);
    Automerge::load_with_options(chunk, options)
        .map_err(|e| VerifyError::Malformed(format!("a document does not load: {e}")))
}

/// True if `chunk` starts like an automerge document chunk (the whole saved
/// document rather than single changes).
pub fn is_document_chunk(chunk: &[u8]) -> bool {
    chunk.len() > 8 && chunk[..4] == MAGIC && chunk[8] == CHUNK_DOCUMENT
}

/// The most probes a peer's Bloom filter may ask for per hash (automerge
/// makes 7).
const MAX_BLOOM_PROBES: u64 = 64;

/// Checks the Bloom filters in a peer's `have`: automerge 0.12 trusts their
/// header, and divides by zero on one with entries but no bits, or allocates
/// and loops as many probes as it says (up to 2^32) for every change it
/// considers sending.
pub fn check_have(have: &[automerge::sync::Have]) -> Result<(), VerifyError> {
    let bad = || VerifyError::Malformed("a Bloom filter in the sync message is malformed".into());
    for h in have {
        let bytes = h.bloom.to_bytes();
        if bytes.is_empty() {
            continue;
        }
        let (entries, a) = uleb(&bytes).ok_or_else(bad)?;
        let (bits_per_entry, b) = uleb(&bytes[a..]).ok_or_else(bad)?;
        let (probes, c) = uleb(&bytes[a + b..]).ok_or_else(bad)?;
        let bits = bytes.len() - (a + b + c);
        if entries == 0 || bits_per_entry == 0 || bits == 0 || probes > MAX_BLOOM_PROBES {
            return Err(bad());
        }
    }
    Ok(())
}

/// Reads an unsigned LEB128 number; returns it and the bytes used.
fn uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Checks attestations' signatures; returns the first failure.
pub fn check_signatures(attestations: &[Attestation]) -> Result<(), VerifyError> {
    for a in attestations {
        if !a.verify() {
            return Err(VerifyError::BadSignature(a.device.short()));
        }
    }
    Ok(())
}

/// What of the changes waiting in a session may be applied now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Changes to apply, in dependency order: each one's dependencies are in
    /// the document or earlier in the list, and each is reached from an
    /// attestation by its own author that names a change in the list.
    pub ready: Vec<ChangeHash>,
    /// The attestations naming a change in `ready`: to store with them, so
    /// that this device can vouch for them when it relays them.
    pub attestations: Vec<Attestation>,
    /// A device with a change that could be applied but that nothing received
    /// can vouch for: every attestation of that device names a change already
    /// held or placeable, and none reaches it. A forgery, not a delay.
    pub unsigned: Option<DeviceId>,
}

/// How many times [`place`] narrows its candidates before it gives up for this
/// round (a pathological graph; honest ones settle in one or two passes).
const MAX_PASSES: usize = 16;

/// Decides which `waiting` changes (received, not in `doc`) can be applied,
/// given the verified `attestations` received so far.
pub fn place<C: ChangeNode, S: BuildHasher>(
    doc: &Automerge,
    waiting: &HashMap<ChangeHash, C, S>,
    attestations: &[Attestation],
) -> Placement {
    let mut held_cache: FastMap<ChangeHash, bool> = FastMap::default();
    let mut held = |h: &ChangeHash| {
        *held_cache
            .entry(*h)
            .or_insert_with(|| doc.get_change_meta_by_hash(h).is_some())
    };
    let mut candidates: Vec<ChangeHash> = waiting.keys().copied().filter(|h| !held(h)).collect();
    // Sorted so that the order of application is the same on every run.
    candidates.sort_unstable();
    let mut order = in_dependency_order(waiting, &candidates, &mut held);
    let placeable: FastSet<ChangeHash> = order.iter().copied().collect();

    // Changes nothing received can vouch for: no attestation of their author
    // names a change that is still to come (unseen, or waiting for its own
    // dependencies), so none ever will reach them.
    let first = covered(waiting, &order, &placeable, attestations);
    let unsigned = order
        .iter()
        .filter(|h| !first.contains(*h))
        .filter_map(|h| waiting.get(h))
        .find(|c| {
            !attestations
                .iter()
                .any(|a| a.device.is_actor(c.actor()) && !placeable.contains(&a.hash) && !held(&a.hash))
        })
        .and_then(|c| DeviceId::from_actor(c.actor()));

    // Narrow to what is covered, then to what still has its dependencies, until
    // both hold: a change covered only through one that must wait, waits too.
    let mut set = placeable;
    let mut cover = first;
    let mut settled = false;
    for _ in 0..MAX_PASSES {
        if cover.len() == set.len() {
            settled = true;
            break;
        }
        let narrowed: Vec<ChangeHash> = order.iter().copied().filter(|h| cover.contains(h)).collect();
        order = in_dependency_order(waiting, &narrowed, &mut held);
        set = order.iter().copied().collect();
        cover = covered(waiting, &order, &set, attestations);
    }
    if !settled {
        order.clear();
        set.clear();
    }
    let mut kept: Vec<Attestation> = Vec::new();
    for a in attestations {
        if set.contains(&a.hash) && !kept.iter().any(|k| k.hash == a.hash && k.device == a.device) {
            kept.push(*a);
        }
    }
    Placement {
        ready: order,
        attestations: kept,
        unsigned,
    }
}

/// The `candidates` whose dependencies are all held or among the candidates
/// (transitively), in an order that applies each after its dependencies.
fn in_dependency_order<C: ChangeNode, S: BuildHasher>(
    waiting: &HashMap<ChangeHash, C, S>,
    candidates: &[ChangeHash],
    held: &mut impl FnMut(&ChangeHash) -> bool,
) -> Vec<ChangeHash> {
    let wanted: FastSet<ChangeHash> = candidates.iter().copied().collect();
    let mut missing: FastMap<ChangeHash, usize> = FastMap::default();
    let mut dependents: FastMap<ChangeHash, Vec<ChangeHash>> = FastMap::default();
    let mut queue: VecDeque<ChangeHash> = VecDeque::new();
    for h in candidates {
        let Some(c) = waiting.get(h) else { continue };
        let mut count = 0;
        let mut blocked = false;
        for d in c.deps() {
            if wanted.contains(d) {
                count += 1;
                dependents.entry(*d).or_default().push(*h);
            } else if !held(d) {
                blocked = true;
            }
        }
        if blocked {
            // Never placed, so its dependents never reach zero either.
            continue;
        }
        if count == 0 {
            queue.push_back(*h);
        } else {
            missing.insert(*h, count);
        }
    }
    let mut out = Vec::with_capacity(candidates.len());
    while let Some(h) = queue.pop_front() {
        out.push(h);
        for d in dependents.get(&h).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = missing.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    queue.push_back(*d);
                }
            }
        }
    }
    out
}

/// The changes in `set` reached, through dependencies within `set`, from an
/// attestation by their own author naming a change in `set`. `order` is `set`
/// in dependency order.
///
/// One pass from the newest changes back: each change carries the set of
/// devices whose attested changes reach it (a bit per device), handed on to
/// its dependencies. A couple has a handful of devices; attestations of more
/// than 64 devices in one placement are not followed (their changes then read
/// as unsigned), so a peer cannot make this cost devices x changes.
fn covered<C: ChangeNode, S: BuildHasher>(
    waiting: &HashMap<ChangeHash, C, S>,
    order: &[ChangeHash],
    set: &FastSet<ChangeHash>,
    attestations: &[Attestation],
) -> FastSet<ChangeHash> {
    let mut devices: Vec<DeviceId> = Vec::new();
    let mut attested: FastMap<ChangeHash, u64> = FastMap::default();
    for a in attestations.iter().filter(|a| set.contains(&a.hash)) {
        let bit = match devices.iter().position(|d| *d == a.device) {
            Some(i) => i,
            None if devices.len() < MAX_ATTESTING_DEVICES => {
                devices.push(a.device);
                devices.len() - 1
            }
            None => continue,
        };
        *attested.entry(a.hash).or_default() |= 1 << bit;
    }
    let mut reach: FastMap<ChangeHash, u64> =
        FastMap::with_capacity_and_hasher(order.len(), Default::default());
    let mut out = FastSet::default();
    for h in order.iter().rev() {
        let mask = reach.remove(h).unwrap_or(0) | attested.get(h).copied().unwrap_or(0);
        if mask == 0 {
            continue;
        }
        let Some(c) = waiting.get(h) else { continue };
        if devices
            .iter()
            .enumerate()
            .any(|(i, d)| mask & (1 << i) != 0 && d.is_actor(c.actor()))
        {
            out.insert(*h);
        }
        for d in c.deps().iter().filter(|d| set.contains(*d)) {
            *reach.entry(*d).or_default() |= mask;
        }
    }
    out
}

/// The most devices whose attestations one placement follows: the bits of a
/// mask.
const MAX_ATTESTING_DEVICES: usize = 64;

/// [`covered`] by a search from each device's attested changes: the
/// reference the one pass is tested against.
#[cfg(test)]
fn covered_by_search<C: ChangeNode, S: BuildHasher>(
    waiting: &HashMap<ChangeHash, C, S>,
    set: &FastSet<ChangeHash>,
    attestations: &[Attestation],
) -> FastSet<ChangeHash> {
    let mut by_device: HashMap<DeviceId, Vec<ChangeHash>> = HashMap::new();
    for a in attestations.iter().filter(|a| set.contains(&a.hash)) {
        by_device.entry(a.device).or_default().push(a.hash);
    }
    let mut out = FastSet::default();
    for (device, sources) in by_device {
        let mut queue = VecDeque::from(sources);
        let mut visited = FastSet::default();
        while let Some(h) = queue.pop_front() {
            if !visited.insert(h) {
                continue;
            }
            let Some(c) = waiting.get(&h) else { continue };
            if device.is_actor(c.actor()) {
                out.insert(h);
            }
            queue.extend(c.deps().iter().copied().filter(|d| set.contains(d)));
        }
    }
    out
}

/// Checks that the changes just `applied` to `doc` were each made by a member
/// allowed to write them, where they wrote them ([`duet_model::authority`]),
/// in a space founded by `founder`.
///
/// A change a revoked device made after its cut-off is refused when that device
/// delivers it itself, or when nobody authenticated delivers it (a bundle).
/// Relayed by another member over a connection that member authenticated
/// (`relayed_by`: the peer whose key the TLS handshake checked), whose device
/// took it before it learned of the revocation, it is accepted: refusing it
/// would cut the couple's devices apart for good, since everything that member
/// wrote since depends on it. It still carries no authority (a device entry
/// or a key it wrote does not count, see [`duet_model::members`]).
///
/// Automerge may panic on hostile data reached through the document; callers
/// facing a peer run this inside `catch_unwind`.
pub fn check_members(
    doc: &Automerge,
    applied: &[Change],
    founder: DeviceId,
    relayed_by: Option<&DeviceId>,
) -> Result<(), VerifyError> {
    if applied.is_empty() {
        return Ok(());
    }
    let mut judge = Judge::new(doc, founder);
    for c in applied {
        match judge.membership().check_change(c.actor_id(), c.seq()) {
            Err(ChangeRefusal::Revoked(who)) if relayed_by.is_some_and(|p| !p.is_actor(c.actor_id())) => {
                tracing::warn!(device = %who, "accepting a revoked device's change relayed by a member");
            }
            other => other?,
        }
        judge.check(c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_model::{DeviceSecret, Editor, Founder, Seat, space};

    /// The device that founded the space of these tests.
    fn founder() -> DeviceId {
        DeviceSecret::from_bytes(&[1; 32]).device_id()
    }

    /// The device delivering the changes in these tests: device b itself.
    fn peer() -> DeviceId {
        DeviceSecret::from_bytes(&[2; 32]).device_id()
    }

    fn space_with_partner() -> (Automerge, DeviceSecret, DeviceSecret) {
        let a = DeviceSecret::from_bytes(&[1; 32]);
        let b = DeviceSecret::from_bytes(&[2; 32]);
        let mut doc = Automerge::new().with_actor(a.device_id().actor());
        let founder = Founder {
            space_id: "5eed".into(),
            name: "Sam".into(),
            device: a.device_id(),
            device_name: "laptop".into(),
        };
        space::create(&mut doc, &founder, 0).unwrap();
        Editor::new(&mut doc, Seat::A, 1)
            .add_device(b.device_id(), Seat::B, "phone")
            .unwrap();
        (doc, a, b)
    }

    /// Device b makes `n` edits on a fork; returns the fork and its new changes.
    fn edits_by_b(doc: &Automerge, n: usize) -> (Automerge, Vec<Change>) {
        let mut fork = doc
            .fork()
            .with_actor(DeviceSecret::from_bytes(&[2; 32]).device_id().actor());
        let before = fork.get_heads();
        for i in 0..n {
            Editor::new(&mut fork, Seat::B, i as i64)
                .rename(&format!("Alex {i}"))
                .unwrap();
        }
        let changes = fork.get_changes(&before);
        (fork, changes)
    }

    fn waiting(changes: &[Change]) -> HashMap<ChangeHash, Change> {
        changes.iter().map(|c| (c.hash(), c.clone())).collect()
    }

    fn hashes(changes: &[Change]) -> Vec<ChangeHash> {
        changes.iter().map(Change::hash).collect()
    }

    #[test]
    fn bloom_filters_automerge_would_panic_or_spin_on_are_refused() {
        use automerge::sync::{BloomFilter, Have};
        let have = |bloom: BloomFilter| Have {
            last_sync: Vec::new(),
            bloom,
        };
        let hashes = [ChangeHash([1; 32]), ChangeHash([2; 32])];
        let real = BloomFilter::from_hashes(hashes.iter());
        assert!(check_have(&[have(real), have(BloomFilter::default())]).is_ok());
        // Entries but no bits: automerge divides by zero probing it.
        let no_bits = BloomFilter::try_from(&[1u8, 0, 7][..]).unwrap();
        assert!(std::panic::catch_unwind(|| no_bits.contains_hash(&hashes[0])).is_err());
        assert!(check_have(&[have(no_bits)]).is_err());
        // 2^31 probes per hash.
        let spinning = BloomFilter::try_from(&[1u8, 8, 0x80, 0x80, 0x80, 0x80, 0x08, 0xff][..]).unwrap();
        assert!(check_have(&[have(spinning)]).is_err());
    }

    /// The one-pass coverage and the search per device agree, whatever the
    /// attestations: interleaved edits of three devices, every subset of
    /// attested changes among a few.
    #[test]
    fn coverage_in_one_pass_matches_the_search_per_device() {
        let keys: Vec<DeviceSecret> = (1..=3u8).map(|n| DeviceSecret::from_bytes(&[n; 32])).collect();
        let (mut doc, _, _) = space_with_partner();
        Editor::new(&mut doc, Seat::A, 2)
            .add_device(keys[2].device_id(), Seat::B, "tablet")
            .unwrap();
        let base = doc.get_heads();
        let mut forks: Vec<Automerge> = keys
            .iter()
            .map(|k| doc.fork().with_actor(k.device_id().actor()))
            .collect();
        for round in 0..4 {
            for (i, fork) in forks.iter_mut().enumerate() {
                let seat = if i == 0 { Seat::A } else { Seat::B };
                Editor::new(fork, seat, round)
                    .rename(&format!("name {round} {i}"))
                    .unwrap();
            }
            // Devices 0 and 1 meet every other round; device 2 merges all.
            if round % 2 == 1 {
                let mut one = forks[1].clone();
                forks[0].merge(&mut one).unwrap();
            }
            let (left, right) = forks.split_at_mut(2);
            right[0].merge(&mut left[0]).unwrap();
        }
        let mut all = forks[2].clone();
        all.merge(&mut forks[1].clone()).unwrap();
        let changes = all.get_changes(&base);
        let pending = waiting(&changes);
        let candidates: Vec<ChangeHash> = hashes(&changes);
        let order = in_dependency_order(&pending, &candidates, &mut |h| {
            doc.get_change_meta_by_hash(h).is_some()
        });
        assert_eq!(order.len(), changes.len());
        let set: FastSet<ChangeHash> = order.iter().copied().collect();
        let picks: Vec<Attestation> = changes
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .filter_map(|(_, c)| {
                keys.iter()
                    .find(|k| k.device_id().is_actor(c.actor_id()))
                    .map(|k| k.attest(&c.hash()))
            })
            .collect();
        assert!(picks.len() >= 4);
        for mask in 0u32..(1 << picks.len().min(8)) {
            let atts: Vec<Attestation> = picks
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, a)| *a)
                .collect();
            let one_pass = covered(&pending, &order, &set, &atts);
            let search = covered_by_search(&pending, &set, &atts);
            assert_eq!(one_pass, search, "attestations {mask:b}");
        }
    }

    /// Finding 9 of the security review: past 64 attesting devices,
    /// placement fell back to a search per device (devices x changes). Now
    /// the 65th device's signature is not followed and its change reads as
    /// unsigned.
    #[test]
    fn attestations_of_more_than_64_devices_are_not_followed() {
        let (doc, _, _) = space_with_partner();
        let mut changes = Vec::new();
        let mut atts = Vec::new();
        for n in 10..=(10 + MAX_ATTESTING_DEVICES as u8) {
            let key = DeviceSecret::from_bytes(&[n; 32]);
            let mut fork = doc.fork().with_actor(key.device_id().actor());
            let before = fork.get_heads();
            Editor::new(&mut fork, Seat::B, 0)
                .rename(&format!("d{n}"))
                .unwrap();
            let c = fork.get_changes(&before).remove(0);
            atts.push(key.attest(&c.hash()));
            changes.push(c);
        }
        let p = place(&doc, &waiting(&changes), &atts);
        assert_eq!(p.ready.len(), MAX_ATTESTING_DEVICES);
        assert!(p.unsigned.is_some());
    }

    #[test]
    fn one_attestation_vouches_for_a_devices_whole_run() {
        let (mut doc, _, b) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 5);
        let att = b.attest(&changes.last().unwrap().hash());
        check_signatures(&[att]).unwrap();
        let p = place(&doc, &waiting(&changes), &[att]);
        assert_eq!(p.ready, hashes(&changes), "all of them, in dependency order");
        assert_eq!(p.attestations, vec![att]);
        assert_eq!(p.unsigned, None);
        doc.apply_changes(changes.clone()).unwrap();
        check_members(&doc, &changes, founder(), Some(&peer())).unwrap();
    }

    #[test]
    fn unsigned_and_wrongly_signed_changes_are_never_placed() {
        let (doc, a, b) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 2);
        let tip = changes.last().unwrap().hash();
        let b_id = b.device_id();
        // No attestation at all.
        let p = place(&doc, &waiting(&changes), &[]);
        assert!(p.ready.is_empty());
        assert_eq!(p.unsigned, Some(b_id));
        // Signed by the wrong device (a member, but not the author).
        let p = place(&doc, &waiting(&changes), &[a.attest(&tip)]);
        assert!(p.ready.is_empty());
        assert_eq!(p.unsigned, Some(b_id));
        // An attestation covering only the first change places only that one,
        // and the second can never be vouched for by what was received.
        let first = changes[0].hash();
        let p = place(&doc, &waiting(&changes), &[b.attest(&first)]);
        assert_eq!(p.ready, vec![first]);
        assert_eq!(p.unsigned, Some(b_id));
        // A tampered signature.
        let mut forged = b.attest(&tip);
        forged.signature[10] ^= 0xff;
        assert!(matches!(
            check_signatures(&[forged]),
            Err(VerifyError::BadSignature(_))
        ));
    }

    #[test]
    fn a_change_waits_for_the_one_between_it_and_its_signature() {
        let (doc, _, b) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 3);
        let att = [b.attest(&changes[2].hash())];
        // The newest and the oldest arrive; the one between them has not yet.
        let mut w = waiting(&[changes[2].clone(), changes[0].clone()]);
        let p = place(&doc, &w, &att);
        assert!(
            p.ready.is_empty(),
            "the oldest is vouched for only through the missing one"
        );
        assert_eq!(p.unsigned, None, "a delay, not a forgery");
        w.insert(changes[1].hash(), changes[1].clone());
        let p = place(&doc, &w, &att);
        assert_eq!(p.ready, hashes(&changes));
    }

    #[test]
    fn a_change_covered_only_through_one_that_waits_waits_too() {
        let (doc, a, b) = space_with_partner();
        // b makes b1, then learns a's change x and makes b2 on top of it.
        let (mut fork, b_changes) = edits_by_b(&doc, 1);
        let mut at_a = doc.fork().with_actor(a.device_id().actor());
        let before_a = at_a.get_heads();
        Editor::new(&mut at_a, Seat::A, 5).rename("Sam 2").unwrap();
        let x = at_a.get_changes(&before_a);
        fork.apply_changes(x.clone()).unwrap();
        let before = fork.get_heads();
        Editor::new(&mut fork, Seat::B, 9).rename("Alex 9").unwrap();
        let b2 = fork.get_changes(&before);
        let atts = [b.attest(&b2[0].hash()), a.attest(&x[0].hash())];
        // x has not arrived: b2 waits for it, and b1 (vouched for only through
        // b2) waits with it.
        let mut w = waiting(&[b_changes[0].clone(), b2[0].clone()]);
        let p = place(&doc, &w, &atts);
        assert!(p.ready.is_empty());
        assert_eq!(p.unsigned, None);
        w.insert(x[0].hash(), x[0].clone());
        let p = place(&doc, &w, &atts);
        assert_eq!(p.ready.len(), 3);
        assert_eq!(p.attestations.len(), 2, "both signatures are kept for relaying");
    }

    #[test]
    fn changes_by_non_members_are_refused_even_when_signed() {
        let (doc, _, _) = space_with_partner();
        let stranger = DeviceSecret::from_bytes(&[7; 32]);
        let mut fork = doc.fork().with_actor(stranger.device_id().actor());
        let before = fork.get_heads();
        Editor::new(&mut fork, Seat::B, 0).rename("Mallory").unwrap();
        let changes = fork.get_changes(&before);
        let att = [stranger.attest(&changes[0].hash())];
        let p = place(&doc, &waiting(&changes), &att);
        assert_eq!(
            p.ready.len(),
            1,
            "signed by its author, so placed; membership decides"
        );
        assert!(matches!(
            check_members(&fork, &changes, founder(), Some(&peer())),
            Err(VerifyError::Refused(ChangeRefusal::NotAMember(_)))
        ));
    }

    #[test]
    fn chunks_are_split_and_checked() {
        let (doc, _, _) = space_with_partner();
        let (_, changes) = edits_by_b(&doc, 3);
        let mut data = Vec::new();
        for c in &changes {
            data.extend_from_slice(c.raw_bytes());
        }
        assert_eq!(parse_chunks(&data).unwrap().len(), 3);
        assert_eq!(
            parse_chunks(&doc.save()).unwrap().len(),
            doc.get_changes(&[]).len(),
            "a document chunk yields its changes"
        );
        let mut bad = data.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(parse_chunks(&bad).is_err(), "a checksum mismatch is caught");
        assert!(
            parse_chunks(&data[..data.len() - 3]).is_err(),
            "truncation is caught"
        );
        assert!(parse_chunks(&[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 9, 0]).is_err());
    }
}

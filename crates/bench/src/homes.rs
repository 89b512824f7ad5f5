//! The couple's homes on disk, built from a generated history through the real
//! store: every week each partner's edits go through `duet_model::Editor` in
//! one `Store::write` on their own device (so the store signs them), then the
//! two devices meet and exchange what is new, with their attestations, the way
//! a sync stores it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use automerge::ChangeHash;
use duet::Home;
use duet_model::{DeviceSecret, Editor, Founder, Seat, space};
use duet_store::{NewStore, Store};

use crate::workload::{self, Model, Shape};

/// A generated history: two homes (partner a's laptop and partner b's phone)
/// holding the same document, and that document saved to a file.
pub struct History {
    /// Years of weekly use.
    pub years: u32,
    /// Where it lives: `a/`, `b/` and `doc.automerge`.
    pub dir: PathBuf,
    /// The space's id.
    pub space_id: String,
    /// Device keys: a's laptop, b's phone, and a's new phone (a member that has
    /// never synced, for first syncs).
    keys: [[u8; 32]; 3],
    /// The model as of the end of the history (clone it to draw more edits).
    pub model: Model,
    /// Changes in the document.
    pub changes: i64,
    /// Bytes of the saved (compressed) document.
    pub saved_bytes: usize,
    /// How long generating took.
    pub took: Duration,
}

/// A device of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Partner a's laptop (founded the space).
    LaptopA,
    /// Partner b's phone.
    PhoneB,
    /// Partner a's new phone: a member, never synced.
    NewPhoneA,
}

impl History {
    /// A device's secret key.
    pub fn secret(&self, d: Device) -> DeviceSecret {
        DeviceSecret::from_bytes(&self.keys[d as usize])
    }

    /// The home folder of a device that has the history.
    pub fn home(&self, d: Device) -> PathBuf {
        match d {
            Device::LaptopA => self.dir.join("a"),
            Device::PhoneB => self.dir.join("b"),
            Device::NewPhoneA => self.dir.join("c"),
        }
    }

    /// The saved document.
    pub fn doc_file(&self) -> PathBuf {
        self.dir.join("doc.automerge")
    }

    /// Copies device `d`'s home to `dst` (which must not exist).
    pub fn copy_home(&self, d: Device, dst: &Path) -> Result<PathBuf> {
        copy_home(&self.home(d), dst)?;
        Ok(dst.to_path_buf())
    }

    /// Makes an empty home for the new phone in `dst`, as it is right after
    /// pairing: its key, the space's id, no document yet.
    pub fn fresh_new_phone(&self, dst: &Path) -> Result<Home> {
        let secret = self.secret(Device::NewPhoneA);
        let meta = [("seat", Seat::A.as_str()), ("space_id", self.space_id.as_str())];
        let new = NewStore {
            device: &secret,
            device_name: "Sam's new phone",
            meta: &meta,
            now_ms: self.model.start_ms(),
        };
        drop(Store::create(dst, &new, |_| -> Result<(), anyhow::Error> {
            Ok(())
        })?);
        Ok(Home::open(dst)?)
    }
}

/// Copies a (closed) home folder.
pub fn copy_home(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), dst.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Exchanges what each device made since `common` (the heads both held after
/// their last meeting), with attestations, as a sync would store it.
pub fn meet(a: &mut Home, b: &mut Home, common: &mut Vec<ChangeHash>) -> Result<()> {
    let ca = a.read(|d| d.get_changes(common))?;
    let cb = b.read(|d| d.get_changes(common))?;
    let atts_a = a.store_mut().attestations()?;
    let atts_b = b.store_mut().attestations()?;
    for (to, changes, atts) in [(&mut *a, cb, atts_b), (&mut *b, ca, atts_a)] {
        if changes.is_empty() {
            continue;
        }
        to.store_mut().write_with(|w| -> Result<(), anyhow::Error> {
            w.doc.apply_changes(changes)?;
            w.attestations.extend(atts);
            Ok(())
        })?;
    }
    let (ha, hb) = (a.read(|d| d.get_heads())?, b.read(|d| d.get_heads())?);
    ensure!(ha == hb, "the two homes differ after meeting");
    *common = ha;
    Ok(())
}

/// Weeks at the end of a history written one edit per store write.
const TAIL_WEEKS: usize = 1;

/// Generates `years` of weekly use with `seed` into `root` (made if missing).
pub fn build(root: &Path, years: u32, seed: u64) -> Result<History> {
    let started = Instant::now();
    fs::create_dir_all(root)?;
    let shape = Shape::years(years);
    let mut model = Model::new(seed, shape.weeks);
    let keys: [[u8; 32]; 3] = [model.rng().bytes(), model.rng().bytes(), model.rng().bytes()];
    let space_id: String = model
        .rng()
        .bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t0 = model.start_ms();
    let [sa, sb, sc] = keys.map(|k| DeviceSecret::from_bytes(&k));

    // Partner a founds the space on the laptop and pairs b's phone.
    let (dir_a, dir_b) = (root.join("a"), root.join("b"));
    let meta_a = [("seat", "a"), ("space_id", space_id.as_str())];
    let founder = Founder {
        space_id: space_id.clone(),
        name: "Sam".into(),
        device: sa.device_id(),
        device_name: "Sam's laptop".into(),
    };
    let new_a = NewStore {
        device: &sa,
        device_name: "Sam's laptop",
        meta: &meta_a,
        now_ms: t0,
    };
    drop(Store::create(
        &dir_a,
        &new_a,
        |doc| -> Result<(), anyhow::Error> {
            space::create(doc, &founder, t0)?;
            let mut e = Editor::new(doc, Seat::A, t0);
            e.add_device(sb.device_id(), Seat::B, "Alex's phone")?;
            e.set_partner_name(Seat::B, "Alex")?;
            Ok(())
        },
    )?);
    let meta_b = [("seat", "b"), ("space_id", space_id.as_str())];
    let new_b = NewStore {
        device: &sb,
        device_name: "Alex's phone",
        meta: &meta_b,
        now_ms: t0,
    };
    drop(Store::create(&dir_b, &new_b, |_| -> Result<(), anyhow::Error> {
        Ok(())
    })?);
    let mut a = Home::open(&dir_a)?;
    let mut b = Home::open(&dir_b)?;
    let mut common = Vec::new();
    meet(&mut a, &mut b, &mut common)?;

    // Weeks are written a quarter at a time: one store write per device holds
    // thirteen weeks of edits and meetings (exchanged in memory, each device's
    // newest change signed with its key as the store would), which keeps
    // generation fast. The last weeks are written edit by edit, as the `duet`
    // command writes them, so the log ends with a realistic tail after the
    // latest snapshot.
    let weeks = workload::plan(&shape, model.rng());
    let tail_from = weeks.len().saturating_sub(TAIL_WEEKS);
    let (bulk, tail) = weeks.split_at(tail_from);
    for quarter in bulk.chunks(13) {
        a.store_mut().write_with(|wa| -> Result<(), anyhow::Error> {
            b.store_mut().write_with(|wb| -> Result<(), anyhow::Error> {
                let mut tips = [None, None];
                for counts in quarter {
                    let [ea, eb] = model.week(*counts);
                    for (k, doc, edits) in [(0, &mut *wa.doc, &ea), (1, &mut *wb.doc, &eb)] {
                        workload::apply_all(doc, edits)?;
                        if !edits.is_empty() {
                            tips[k] = doc.get_last_local_change().map(|c| c.hash());
                        }
                    }
                    let ca = wa.doc.get_changes(&common);
                    let cb = wb.doc.get_changes(&common);
                    wa.doc.apply_changes(cb)?;
                    wb.doc.apply_changes(ca)?;
                    common = wa.doc.get_heads();
                    ensure!(
                        common == wb.doc.get_heads(),
                        "the two devices differ after meeting"
                    );
                    model.sync();
                }
                // Each store signs its own device's newest change; the other
                // device's signature comes with its changes, as in a sync.
                wa.attestations.extend(tips[1].map(|h| sb.attest(&h)));
                wb.attestations.extend(tips[0].map(|h| sa.attest(&h)));
                Ok(())
            })
        })?;
    }
    for counts in tail {
        let [ea, eb] = model.week(*counts);
        for (home, edits) in [(&mut a, ea), (&mut b, eb)] {
            for e in &edits {
                home.store_mut()
                    .write(|doc| -> Result<(), anyhow::Error> { Ok(workload::apply(doc, e)?) })?;
            }
        }
        meet(&mut a, &mut b, &mut common)?;
        model.sync();
    }
    // Partner a got a new phone and paired it; it has not synced yet.
    a.store_mut().write(|doc| -> Result<(), anyhow::Error> {
        let now = model.start_ms() + shape.weeks as i64 * 7 * 24 * 3600 * 1000;
        Ok(Editor::new(doc, Seat::A, now).add_device(sc.device_id(), Seat::A, "Sam's new phone")?)
    })?;
    meet(&mut a, &mut b, &mut common)?;
    model.sync();

    let saved = a.read(|d| d.save())?;
    fs::write(root.join("doc.automerge"), &saved)?;
    let changes = a.store_mut().stats()?.changes;
    // Closing both stores checkpoints their write-ahead logs, so the folders
    // can be copied as they are.
    drop(a);
    drop(b);
    Ok(History {
        years,
        dir: root.to_path_buf(),
        space_id,
        keys,
        model,
        changes,
        saved_bytes: saved.len(),
        took: started.elapsed(),
    })
}

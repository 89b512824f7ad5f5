//! The six scenarios of the benchmark, each measuring duet and its baselines
//! in the same run, repeats interleaved so that noise hits both alike.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use automerge::sync::State;
use automerge::{Automerge, ChangeHash, ReadDoc};
use duet::Home;
use duet_model::Seat;

use crate::homes::{Device, History};
use crate::net::{self, Counter, SamodPeer, Served, Shared, lock};
use crate::report::{Row, Target, median, ms, percentile};
use crate::sys;
use crate::workload::{self, Edit};

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Repeats of a first sync (scenario 1, and 6).
    pub first_sync_repeats: usize,
    /// Offline edits per side (scenario 2).
    pub offline_edits: Vec<usize>,
    /// Repeats of each reconnect.
    pub reconnect_repeats: usize,
    /// Edits propagated live (scenario 3).
    pub live_edits: usize,
    /// Cold starts (scenario 4).
    pub open_repeats: usize,
    /// Edits whose cost is measured (scenario 5).
    pub edits: usize,
    /// Of those, how many the whole-document rewrite repeats (its cost per
    /// edit does not depend on how many).
    pub rewrites: usize,
}

impl Config {
    /// The full run, or the quick one.
    pub fn new(quick: bool) -> Config {
        if quick {
            Config {
                first_sync_repeats: 2,
                offline_edits: vec![10, 100, 1000],
                reconnect_repeats: 2,
                live_edits: 30,
                open_repeats: 3,
                edits: 500,
                rewrites: 20,
            }
        } else {
            Config {
                first_sync_repeats: 5,
                offline_edits: vec![10, 100, 1000],
                reconnect_repeats: 5,
                live_edits: 200,
                open_repeats: 9,
                edits: 1000,
                rewrites: 100,
            }
        }
    }
}

fn load_doc(h: &History) -> Result<Automerge> {
    Ok(Automerge::load(&fs::read(h.doc_file())?)?)
}

fn mb(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// A history's label: "5y, 69k changes".
pub fn label(h: &History) -> String {
    format!("{}y, {}k changes", h.years, (h.changes + 500) / 1000)
}

// ---- 1: first sync of a new device ----

/// Medians of a first sync.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstSync {
    /// duet over QUIC (ms).
    pub duet_ms: f64,
    /// duet's UDP bytes.
    pub duet_udp: f64,
    /// duet's sync frame bytes.
    pub duet_frames: f64,
    /// automerge in one process (ms).
    pub inproc_ms: f64,
    /// Its message bytes.
    pub inproc_bytes: f64,
    /// samod over TCP (ms), if measured.
    pub samod_ms: Option<f64>,
    /// Its TCP bytes.
    pub samod_bytes: Option<f64>,
    /// The saved file over TCP, then loaded (ms), if measured.
    pub file_ms: Option<f64>,
}

/// Scenario 1: a new device of partner a (a member, holding nothing) syncs
/// the whole history from partner a's laptop, which is serving.
pub async fn first_sync(h: &History, work: &Path, repeats: usize, alternatives: bool) -> Result<FirstSync> {
    let work = work.join(format!("s1-{}y", h.years));
    fs::create_dir_all(&work)?;
    let a: Shared = Arc::new(Mutex::new(Home::open(
        &h.copy_home(Device::LaptopA, &work.join("a"))?,
    )?));
    let saved_heads = lock(&a)?.read(|d| d.get_heads())?;
    let served = Served::start(a.clone()).await?;
    // Serving gives every member an envelope of the space key, the new phone
    // too (the generated history adds it without one): what the phone gets.
    let target = lock(&a)?.read(|d| d.get_heads())?;
    let server = h.secret(Device::LaptopA).device_id();
    let doc = load_doc(h)?;
    ensure!(
        doc.get_heads() == saved_heads,
        "the saved document is not the laptop's"
    );

    let samod = if alternatives {
        let peer = SamodPeer::start(&work.join("samod-a")).await?;
        let handle = peer
            .repo
            .create(doc.clone())
            .await
            .map_err(|e| anyhow!("samod stopped: {e:?}"))?;
        Some((peer, handle.document_id().clone(), handle))
    } else {
        None
    };
    let file = if alternatives {
        Some(net::file_server(h.doc_file()).await?)
    } else {
        None
    };

    let mut s = Samples::default();
    for r in 0..repeats {
        // duet: the new phone dials the laptop.
        let dir = work.join(format!("c{r}"));
        let c = h.fresh_new_phone(&dir)?;
        let (mut c, got) = net::duet_dial(c, served.addr, &served.name, server, true).await?;
        ensure!(
            c.read(|d| d.get_heads())? == target,
            "the new device does not hold the whole history after its first sync"
        );
        drop(c);
        let _ = fs::remove_dir_all(&dir);
        s.push("duet", ms(got.elapsed));
        s.push("duet_closed", ms(got.closed));
        s.push("duet_local", ms(got.local));
        s.push("duet_lost", got.lost_packets as f64);
        s.push("duet_udp", got.udp_bytes as f64);
        s.push(
            "duet_frames",
            (got.report.stats.bytes_in + got.report.stats.bytes_out) as f64,
        );

        // automerge's protocol between two documents in memory.
        let (mut full, mut empty) = (doc.clone(), Automerge::new());
        let inproc = net::automerge_sync(&mut full, &mut empty, &mut State::new(), &mut State::new())?;
        ensure!(
            empty.get_heads() == saved_heads,
            "automerge's sync did not finish"
        );
        s.push("inproc", ms(inproc.elapsed));
        s.push("inproc_bytes", inproc.bytes as f64);
        drop((full, empty));

        if let Some((peer_a, doc_id, _)) = &samod {
            let dir = work.join(format!("samod-c{r}"));
            let peer_c = SamodPeer::start(&dir).await?;
            let counter = Arc::new(Counter::default());
            let start = Instant::now();
            let dialer = peer_c.dial(peer_a.addr, counter.clone()).await?;
            let handle = peer_c
                .repo
                .find(doc_id.clone())
                .await
                .map_err(|e| anyhow!("samod stopped: {e:?}"))?
                .context("samod did not find the document")?;
            net::samod_wait_for(&handle, &saved_heads, Duration::from_secs(120)).await?;
            s.push("samod", ms(start.elapsed()));
            s.push("samod_bytes", counter.bytes() as f64);
            dialer.close();
            drop(handle);
            peer_c.stop().await;
            let _ = fs::remove_dir_all(&dir);
        }
        if let Some((addr, _)) = &file {
            let start = Instant::now();
            let (loaded, _) = net::fetch_and_load(*addr).await?;
            s.push("file", ms(start.elapsed()));
            ensure!(loaded.get_heads() == saved_heads, "the file did not load");
        }
    }
    served.stop().await?;
    if let Some((peer, _, handle)) = samod {
        drop(handle);
        peer.stop().await;
    }
    if let Some((_, task)) = file {
        task.abort();
    }
    Ok(FirstSync {
        duet_ms: s.median("duet"),
        duet_udp: s.median("duet_udp"),
        duet_frames: s.median("duet_frames"),
        inproc_ms: s.median("inproc"),
        inproc_bytes: s.median("inproc_bytes"),
        samod_ms: s.get("samod").map(median),
        samod_bytes: s.get("samod_bytes").map(median),
        file_ms: s.get("file").map(median),
    })
}

/// Rows for scenario 1.
pub fn first_sync_rows(h: &History, f: &FirstSync) -> Vec<Row> {
    let sc = format!("1 first sync of a new device ({})", label(h));
    let mut rows = vec![Row::new(
        &sc,
        "time (ms)",
        f.duet_ms,
        "automerge sync, in-process",
        f.inproc_ms,
        Target::RatioAtMost(1.5),
    )];
    if let Some(samod) = f.samod_ms {
        rows.push(Row::new(
            &sc,
            "time (ms)",
            f.duet_ms,
            "samod over TCP",
            samod,
            Target::Faster,
        ));
    }
    if let Some(file) = f.file_ms {
        rows.push(Row::new(
            &sc,
            "time (ms)",
            f.duet_ms,
            "saved file over TCP + load",
            file,
            Target::None,
        ));
    }
    rows.push(Row::new(
        &sc,
        "bytes on the wire (QUIC, both ways)",
        f.duet_udp,
        "saved document",
        h.saved_bytes as f64,
        Target::RatioAtMost(1.1),
    ));
    rows.push(Row::new(
        &sc,
        "sync frame bytes (both ways)",
        f.duet_frames,
        "saved document",
        h.saved_bytes as f64,
        Target::None,
    ));
    rows.push(Row::new(
        &sc,
        "bytes on the wire (QUIC, both ways)",
        f.duet_udp,
        "automerge sync messages",
        f.inproc_bytes,
        Target::None,
    ));
    if let Some(samod) = f.samod_bytes {
        rows.push(Row::new(
            &sc,
            "bytes on the wire (QUIC, both ways)",
            f.duet_udp,
            "samod (TCP payload)",
            samod,
            Target::None,
        ));
    }
    rows
}

/// Named samples.
#[derive(Default)]
struct Samples(Vec<(String, Vec<f64>)>);

impl Samples {
    fn push(&mut self, name: &str, v: f64) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, xs)) => xs.push(v),
            None => self.0.push((name.to_string(), vec![v])),
        }
    }

    fn get(&self, name: &str) -> Option<&[f64]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, xs)| xs.as_slice())
    }

    fn median(&self, name: &str) -> f64 {
        self.get(name).map_or(f64::NAN, median)
    }
}

// ---- 2: reconnect after offline edits ----

fn apply_on_home(h: &mut Home, edits: &[Edit]) -> Result<()> {
    for batch in edits.chunks(100) {
        h.store_mut()
            .write(|doc| -> Result<(), anyhow::Error> { Ok(workload::apply_all(doc, batch)?) })?;
    }
    Ok(())
}

fn new_change_bytes(home: &mut Home, since: &[ChangeHash]) -> Result<usize> {
    Ok(home.read(|d| d.get_changes(since).iter().map(|c| c.raw_bytes().len()).sum())?)
}

/// Scenario 2: both partners' devices made `n` edits offline since their last
/// sync, for each `n`; partner b's phone dials partner a's laptop.
pub async fn reconnect(h: &History, work: &Path, cfg: &Config) -> Result<Vec<Row>> {
    let work = work.join("s2");
    fs::create_dir_all(&work)?;
    let a: Shared = Arc::new(Mutex::new(Home::open(
        &h.copy_home(Device::LaptopA, &work.join("a"))?,
    )?));
    let b = Home::open(&h.copy_home(Device::PhoneB, &work.join("b"))?)?;
    let served = Served::start(a.clone()).await?;
    let server = h.secret(Device::LaptopA).device_id();
    // Their last sync, which leaves both with a saved sync state.
    let (mut b, _) = net::duet_dial(b, served.addr, &served.name, server, false).await?;

    // automerge in memory, with the sync states kept from the last sync.
    let doc = load_doc(h)?;
    let mut da = doc
        .clone()
        .with_actor(h.secret(Device::LaptopA).device_id().actor());
    let mut db = doc
        .clone()
        .with_actor(h.secret(Device::PhoneB).device_id().actor());
    let (mut sa, mut sb) = (State::new(), State::new());
    net::automerge_sync(&mut da, &mut db, &mut sa, &mut sb)?;
    let (mut kept_a, mut kept_b) = (sa.encode(), sb.encode());

    // samod: b's repo found the document from a's, then they disconnected.
    let peer_a = SamodPeer::start(&work.join("samod-a")).await?;
    let peer_b = SamodPeer::start(&work.join("samod-b")).await?;
    let ha = peer_a
        .repo
        .create(doc.clone())
        .await
        .map_err(|e| anyhow!("samod stopped: {e:?}"))?;
    let counter = Arc::new(Counter::default());
    let dialer = peer_b.dial(peer_a.addr, counter.clone()).await?;
    let hb = peer_b
        .repo
        .find(ha.document_id().clone())
        .await
        .map_err(|e| anyhow!("samod stopped: {e:?}"))?
        .context("samod did not find the document")?;
    net::samod_wait_for(&hb, &doc.get_heads(), Duration::from_secs(120)).await?;
    dialer.close();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(doc);

    let mut model = h.model.clone();
    model.reseed(0x2_0000 + u64::from(h.years));
    let mut rows = Vec::new();
    for &n in &cfg.offline_edits {
        let mut s = Samples::default();
        let repeats = if n >= 1000 {
            cfg.reconnect_repeats.div_ceil(2).max(2)
        } else {
            cfg.reconnect_repeats
        };
        for _ in 0..repeats {
            let ea = model.take(Seat::A, n);
            let eb = model.take(Seat::B, n);
            let before = lock(&a)?.read(|d| d.get_heads())?;
            apply_on_home(&mut *lock(&a)?, &ea)?;
            apply_on_home(&mut b, &eb)?;
            let change_bytes =
                new_change_bytes(&mut *lock(&a)?, &before)? + new_change_bytes(&mut b, &before)?;
            workload::apply_all(&mut da, &ea)?;
            workload::apply_all(&mut db, &eb)?;
            let heads_a = ha.with_document(|d| -> Result<_> {
                workload::apply_all(d, &ea)?;
                Ok(d.get_heads())
            })?;
            let heads_b = hb.with_document(|d| -> Result<_> {
                workload::apply_all(d, &eb)?;
                Ok(d.get_heads())
            })?;

            let (back, got) = net::duet_dial(b, served.addr, &served.name, server, false).await?;
            b = back;
            let (ta, tb) = (lock(&a)?.read(|d| d.get_heads())?, b.read(|d| d.get_heads())?);
            ensure!(ta == tb, "duet's devices differ after the reconnect");
            s.push("duet", ms(got.elapsed));
            s.push("duet_closed", ms(got.closed));
            s.push("duet_udp", got.udp_bytes as f64);
            s.push(
                "duet_frames",
                (got.report.stats.bytes_in + got.report.stats.bytes_out) as f64,
            );
            s.push("duet_rt", got.report.stats.messages_in as f64 / 2.0);
            s.push("changes", change_bytes as f64);

            let (mut sa, mut sb) = (State::decode(&kept_a)?, State::decode(&kept_b)?);
            let inproc = net::automerge_sync(&mut da, &mut db, &mut sa, &mut sb)?;
            ensure!(
                da.get_heads() == db.get_heads(),
                "automerge's sync did not finish"
            );
            (kept_a, kept_b) = (sa.encode(), sb.encode());
            s.push("inproc", ms(inproc.elapsed));
            s.push("inproc_bytes", inproc.bytes as f64);
            s.push("inproc_rt", inproc.messages as f64 / 2.0);

            counter.reset();
            peer_a.accepted.reset();
            let start = Instant::now();
            let dialer = peer_b.dial(peer_a.addr, counter.clone()).await?;
            let (x, y) = tokio::join!(
                net::samod_wait_for(&ha, &heads_b, Duration::from_secs(120)),
                net::samod_wait_for(&hb, &heads_a, Duration::from_secs(120)),
            );
            x?;
            y?;
            s.push("samod", ms(start.elapsed()));
            s.push("samod_bytes", counter.bytes() as f64);
            s.push(
                "samod_rt",
                peer_a
                    .accepted
                    .frames_written
                    .load(std::sync::atomic::Ordering::Relaxed) as f64
                    / 2.0,
            );
            dialer.close();
            tokio::time::sleep(Duration::from_millis(100)).await;
            model.sync();
        }
        let sc = format!("2 reconnect, {n} offline edits on each side ({})", label(h));
        let d = s.median("duet");
        rows.push(Row::new(
            &sc,
            "time (ms)",
            d,
            "automerge sync, in-process, kept state",
            s.median("inproc"),
            Target::RatioAtMost(1.5),
        ));
        rows.push(Row::new(
            &sc,
            "time (ms)",
            d,
            "samod over TCP",
            s.median("samod"),
            Target::Faster,
        ));
        rows.push(Row::new(
            &sc,
            "bytes on the wire (QUIC, both ways)",
            s.median("duet_udp"),
            "the changes themselves",
            s.median("changes"),
            Target::RatioAtMost(1.15),
        ));
        rows.push(Row::new(
            &sc,
            "sync frame bytes (both ways)",
            s.median("duet_frames"),
            "the changes themselves",
            s.median("changes"),
            Target::None,
        ));
        rows.push(Row::new(
            &sc,
            "bytes on the wire (QUIC, both ways)",
            s.median("duet_udp"),
            "samod (TCP payload)",
            s.median("samod_bytes"),
            Target::None,
        ));
        rows.push(Row::new(
            &sc,
            "sync round trips",
            s.median("duet_rt"),
            "automerge sync, in-process",
            s.median("inproc_rt"),
            Target::AtMost(2.0),
        ));
        rows.push(Row::new(
            &sc,
            "sync round trips",
            s.median("duet_rt"),
            "samod (incl. its handshake)",
            s.median("samod_rt"),
            Target::None,
        ));
    }
    served.stop().await?;
    drop((ha, hb));
    peer_a.stop().await;
    peer_b.stop().await;
    Ok(rows)
}

// ---- 3: live edit propagation ----

/// A `duet serve` process, ended (by its id) when dropped.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_serve(duet: &Path, home: &Path, port: u16, peer: Option<u16>, log: &Path) -> Result<ServeProcess> {
    let mut cmd = Command::new(duet);
    cmd.arg("--home")
        .arg(home)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    if let Some(p) = peer {
        cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
    }
    let filter = std::env::var("DUET_BENCH_SERVE_LOG").unwrap_or_else(|_| "info".into());
    cmd.env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log)?);
    Ok(ServeProcess(cmd.spawn()?))
}

/// Makes `e` on `src` and returns the new change's hash.
fn edit_home(src: &mut Home, e: &Edit) -> Result<ChangeHash> {
    let hash = src
        .store_mut()
        .write(|doc| -> Result<ChangeHash, anyhow::Error> {
            workload::apply(doc, e)?;
            doc.get_last_local_change()
                .map(|c| c.hash())
                .context("the edit made no change")
        })?;
    // As `Home`'s own edit methods do: wake the `serve` running on the home.
    src.notify_changed();
    Ok(hash)
}

fn wait_on_home(dst: &mut Home, hash: &ChangeHash, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if dst.read(|d| d.get_change_by_hash(hash).is_some())? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("an edit did not reach the other device within {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Scenario 3: both devices run `duet serve` (the real binary) on loopback,
/// b's dialling a's; each edit is made by another process on one device's
/// home (as `duet issue note ...` would) and timed until the other device's
/// home holds it. Then samod with the same edits.
pub async fn live(h: &History, work: &Path, duet: &Path, n: usize) -> Result<Vec<Row>> {
    let work = work.join("s3");
    fs::create_dir_all(&work)?;
    let (dir_a, dir_b) = (
        h.copy_home(Device::LaptopA, &work.join("a"))?,
        h.copy_home(Device::PhoneB, &work.join("b"))?,
    );
    let mut model = h.model.clone();
    model.reseed(0x3_0000 + u64::from(h.years));
    const WARM_UP: usize = 4;
    let edits: Vec<Edit> = (0..n + WARM_UP)
        .flat_map(|i| {
            let seat = if i % 2 == 0 { Seat::A } else { Seat::B };
            let e = model.take(seat, 1);
            model.sync();
            e
        })
        .collect();
    let mut gaps = crate::workload::Rng::new(0x3_1000);
    let gap = |g: &mut crate::workload::Rng| Duration::from_millis(5 + g.below(20));

    // duet: two serve processes.
    let (pa, pb) = (sys::free_udp_port()?, sys::free_udp_port()?);
    let serve_a = spawn_serve(duet, &dir_a, pa, None, &work.join("serve-a.log"))?;
    let serve_b = spawn_serve(duet, &dir_b, pb, Some(pa), &work.join("serve-b.log"))?;
    let mut ha = Home::open(&dir_a)?;
    let mut hb = Home::open(&dir_b)?;
    let mut duet_lat = Vec::new();
    for (i, e) in edits.iter().enumerate() {
        let (src, dst) = if e.seat == Seat::A {
            (&mut ha, &mut hb)
        } else {
            (&mut hb, &mut ha)
        };
        let limit = Duration::from_secs(if i < WARM_UP { 30 } else { 10 });
        let start = Instant::now();
        let hash = edit_home(src, e)?;
        wait_on_home(dst, &hash, limit).with_context(|| {
            format!(
                "duet serve on loopback (logs in {})",
                work.join("serve-*.log").display()
            )
        })?;
        if i >= WARM_UP {
            duet_lat.push(ms(start.elapsed()));
        }
        std::thread::sleep(gap(&mut gaps));
    }
    drop((serve_a, serve_b));
    if std::env::var_os("DUET_BENCH_DEBUG").is_some() {
        eprintln!("duet serve latencies (ms): {duet_lat:.0?}");
    }

    // duet embedded: both devices serve from one process (as an app would),
    // each edit (a note) made through the serving home's own methods.
    let notes: Vec<(Seat, duet_model::ItemId, String)> = (0..WARM_UP + n.min(100))
        .filter_map(|i| {
            let seat = if i % 2 == 0 { Seat::A } else { Seat::B };
            let note = model.note_for(seat).map(|(id, text)| (seat, id, text));
            model.sync();
            note
        })
        .collect();
    let embedded = live_embedded(h, &work, &notes, WARM_UP).await;

    // samod: two repos connected over TCP, the same edits.
    let doc = load_doc(h)?;
    let peer_x = SamodPeer::start(&work.join("samod-x")).await?;
    let peer_y = SamodPeer::start(&work.join("samod-y")).await?;
    let hx = peer_x
        .repo
        .create(doc.clone())
        .await
        .map_err(|e| anyhow!("samod stopped: {e:?}"))?;
    let dialer = peer_y.dial(peer_x.addr, Arc::new(Counter::default())).await?;
    let hy = peer_y
        .repo
        .find(hx.document_id().clone())
        .await
        .map_err(|e| anyhow!("samod stopped: {e:?}"))?
        .context("samod did not find the document")?;
    net::samod_wait_for(&hy, &doc.get_heads(), Duration::from_secs(120)).await?;
    let mut samod_lat = Vec::new();
    for (i, e) in edits.iter().enumerate() {
        let (src, dst) = if e.seat == Seat::A { (&hx, &hy) } else { (&hy, &hx) };
        let start = Instant::now();
        let hash = src.with_document(|d| -> Result<ChangeHash> {
            workload::apply(d, e)?;
            d.get_last_local_change()
                .map(|c| c.hash())
                .context("the edit made no change")
        })?;
        net::samod_wait_for(dst, &[hash], Duration::from_secs(10)).await?;
        if i >= WARM_UP {
            samod_lat.push(ms(start.elapsed()));
        }
        tokio::time::sleep(gap(&mut gaps)).await;
    }
    dialer.close();
    if std::env::var_os("DUET_BENCH_DEBUG").is_some() {
        eprintln!("samod latencies (ms): {samod_lat:.1?}");
        if let Ok(Some(lat)) = &embedded {
            eprintln!("embedded duet latencies (ms): {lat:.1?}");
        }
    }
    drop((hx, hy));
    peer_x.stop().await;
    peer_y.stop().await;

    let sc = format!("3 live edit propagation, {n} edits ({})", label(h));
    let mut rows = vec![
        Row::new(
            &sc,
            "p50 latency (ms), `duet serve` processes",
            percentile(&duet_lat, 50.0),
            "samod over TCP",
            percentile(&samod_lat, 50.0),
            Target::RatioAtMost(1.0),
        ),
        Row::new(
            &sc,
            "p99 latency (ms), `duet serve` processes",
            percentile(&duet_lat, 99.0),
            "samod over TCP",
            percentile(&samod_lat, 99.0),
            Target::None,
        ),
    ];
    match embedded {
        Ok(Some(lat)) => rows.push(Row::new(
            &sc,
            "p50 latency (ms), note added in the serving process",
            percentile(&lat, 50.0),
            "samod over TCP",
            percentile(&samod_lat, 50.0),
            Target::None,
        )),
        Ok(None) => rows.push(Row::alone(
            &sc,
            "notes added in the serving process that arrived within 2 s (%)",
            0.0,
            Target::None,
        )),
        Err(e) => eprintln!("live edits in the serving process could not be measured: {e:#}"),
    }
    Ok(rows)
}

/// Live propagation with both devices served from this process by
/// `duet::serve`, each note added through the served home's own method (as an
/// app embedding the engine would). `None` when notes do not arrive (the
/// first is given 2 s).
async fn live_embedded(
    h: &History,
    work: &Path,
    notes: &[(Seat, duet_model::ItemId, String)],
    warm_up: usize,
) -> Result<Option<Vec<f64>>> {
    let a: Shared = Arc::new(Mutex::new(Home::open(
        &h.copy_home(Device::LaptopA, &work.join("ea"))?,
    )?));
    let b: Shared = Arc::new(Mutex::new(Home::open(
        &h.copy_home(Device::PhoneB, &work.join("eb"))?,
    )?));
    let served_a = Served::start(a.clone()).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let opts = duet::ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        peers: vec![served_a.addr],
        poll: Duration::from_millis(100),
        relay: None,
        discovery: false,
    };
    let task_b = tokio::spawn(duet::serve(b.clone(), opts, stop_rx, None));
    let mut lat = Vec::new();
    let mut result = Some(());
    for (i, (seat, issue, text)) in notes.iter().enumerate() {
        let (src, dst) = if *seat == Seat::A { (&a, &b) } else { (&b, &a) };
        let start = Instant::now();
        let hash = {
            let mut home = lock(src)?;
            home.add_note(issue.as_str(), text)?;
            home.read(|d| d.get_last_local_change().map(|c| c.hash()))?
                .context("the note made no change")?
        };
        let limit = if i == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        };
        let deadline = Instant::now() + limit;
        loop {
            if lock(dst)?.read(|d| d.get_change_by_hash(&hash).is_some())? {
                break;
            }
            if Instant::now() > deadline {
                result = None;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if result.is_none() {
            break;
        }
        if i >= warm_up {
            lat.push(ms(start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    let _ = task_b.await;
    served_a.stop().await?;
    Ok(result.map(|()| lat))
}

// ---- 4: open and list ----

/// Medians of a cold start.
#[derive(Debug, Clone, Copy)]
pub struct OpenList {
    /// `duet issue list`, a fresh process (ms).
    pub duet_ms: f64,
    /// Load the saved file with automerge and read the issues, a fresh process (ms).
    pub bare_ms: f64,
    /// Peak memory of `duet issue list` (bytes).
    pub duet_peak: Option<f64>,
    /// Peak memory of the bare load (bytes).
    pub bare_peak: Option<f64>,
}

/// Scenario 4: a cold `duet issue list` on partner a's home, against a fresh
/// process that loads the saved document with automerge and reads the issues.
pub fn open_list(h: &History, work: &Path, duet: &Path, repeats: usize) -> Result<OpenList> {
    let home = h.copy_home(Device::LaptopA, &work.join(format!("s4-{}y", h.years)))?;
    let me = std::env::current_exe()?;
    let duet_args = [
        std::ffi::OsStr::new("--home"),
        home.as_os_str(),
        std::ffi::OsStr::new("issue"),
        std::ffi::OsStr::new("list"),
    ];
    let file = h.doc_file();
    let bare_args = [std::ffi::OsStr::new("--load-and-list"), file.as_os_str()];
    // It lists every issue.
    let out = Command::new(duet).args(duet_args).output()?;
    ensure!(out.status.success(), "duet issue list failed");
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    ensure!(
        lines >= h.model.issue_count(),
        "duet issue list printed {lines} lines for {} issues",
        h.model.issue_count()
    );
    let (mut d, mut b) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        d.push(ms(sys::run_timed(Command::new(duet).args(duet_args))?));
        b.push(ms(sys::run_timed(Command::new(&me).args(bare_args))?));
    }
    Ok(OpenList {
        duet_ms: median(&d),
        bare_ms: median(&b),
        duet_peak: sys::peak_memory(duet, &duet_args)?.map(|v| v as f64),
        bare_peak: sys::peak_memory(&me, &bare_args)?.map(|v| v as f64),
    })
}

/// Rows for scenario 4.
pub fn open_list_rows(h: &History, o: &OpenList) -> Vec<Row> {
    let sc = format!("4 open and list ({})", label(h));
    let mut rows = vec![Row::new(
        &sc,
        "cold `duet issue list` (ms)",
        o.duet_ms,
        "automerge load + read issues, fresh process",
        o.bare_ms,
        Target::RatioAtMost(2.0),
    )];
    if let Some(p) = o.duet_peak {
        rows.push(Row {
            scenario: sc.clone(),
            metric: "peak memory (MB)".into(),
            duet: mb(p),
            baseline_name: "automerge load + read issues".into(),
            baseline: o.bare_peak.map(mb),
            target: Target::AtMost(100.0),
        });
    }
    rows
}

/// The child mode behind scenario 4's baseline: load `file` with automerge
/// and print every issue's id, status and title.
pub fn load_and_list(file: &Path) -> Result<()> {
    use automerge::{ObjType, ROOT, ReadDoc, Value};
    let doc = Automerge::load(&fs::read(file)?)?;
    let Some((Value::Object(ObjType::Map), issues)) = doc.get(ROOT, "issues")? else {
        bail!("the document has no issues");
    };
    let text = |obj: &automerge::ObjId, key: &str| -> String {
        match doc.get(obj, key) {
            Ok(Some((Value::Scalar(s), _))) => s.as_str().unwrap_or_default().to_string(),
            _ => String::new(),
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for key in doc.keys(&issues) {
        if let Ok(Some((Value::Object(ObjType::Map), issue))) = doc.get(&issues, &key) {
            writeln!(
                out,
                "{}  {:<10}  {}",
                &key[..key.len().min(6)],
                text(&issue, "status"),
                text(&issue, "title")
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

// ---- 5: cost of an edit ----

/// What an edit costs.
#[derive(Debug, Clone, Copy)]
pub struct EditCost {
    /// Bytes duet wrote per edit (write(2) bytes, averaged over all edits,
    /// snapshots included).
    pub duet_bytes: f64,
    /// Median milliseconds per edit.
    pub duet_ms: f64,
    /// Bytes the rewrite wrote per edit.
    pub rewrite_bytes: f64,
    /// Its median milliseconds per edit.
    pub rewrite_ms: f64,
}

/// Scenario 5: `n` edits on partner a's home, one store write each (as the
/// `duet` command makes them), against applying each to the document in
/// memory and rewriting the whole saved file (fsynced, as duet's writes are).
pub fn edit_cost(h: &History, work: &Path, n: usize, rewrites: usize) -> Result<EditCost> {
    let work = work.join(format!("s5-{}y", h.years));
    let mut home = Home::open(&h.copy_home(Device::LaptopA, &work.join("a"))?)?;
    home.read(|_| ())?;
    let mut model = h.model.clone();
    model.reseed(0x5_0000 + u64::from(h.years));
    let edits = model.take(Seat::A, n);

    let mut times = Vec::with_capacity(n);
    let io = sys::io();
    for e in &edits {
        let start = Instant::now();
        home.store_mut()
            .write(|doc| -> Result<(), anyhow::Error> { Ok(workload::apply(doc, e)?) })?;
        times.push(ms(start.elapsed()));
    }
    let duet_bytes = (sys::io().wchar - io.wchar) as f64 / n as f64;
    drop(home);

    let mut doc = load_doc(h)?.with_actor(h.secret(Device::LaptopA).device_id().actor());
    let path = work.join("rewritten.automerge");
    let m = rewrites.min(n).max(1);
    let mut rtimes = Vec::with_capacity(m);
    let io = sys::io();
    for e in &edits[..m] {
        let start = Instant::now();
        workload::apply(&mut doc, e)?;
        let bytes = doc.save();
        let mut f = fs::File::create(&path)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        rtimes.push(ms(start.elapsed()));
    }
    let rewrite_bytes = (sys::io().wchar - io.wchar) as f64 / m as f64;
    Ok(EditCost {
        duet_bytes,
        duet_ms: median(&times),
        rewrite_bytes,
        rewrite_ms: median(&rtimes),
    })
}

/// Rows for scenario 5.
pub fn edit_cost_rows(h: &History, c: &EditCost, n: usize) -> Vec<Row> {
    let sc = format!("5 cost of an edit, {n} edits ({})", label(h));
    vec![
        Row::new(
            &sc,
            "bytes written per edit",
            c.duet_bytes,
            "rewrite the saved document",
            c.rewrite_bytes,
            Target::TimesLess(20.0),
        ),
        Row::new(
            &sc,
            "time per edit (ms, median)",
            c.duet_ms,
            "rewrite the saved document",
            c.rewrite_ms,
            Target::None,
        ),
    ]
}

// ---- 6: growth ----

/// Scenario 1, 4 and 5 at one history size.
pub struct AtSize<'h> {
    /// The history.
    pub history: &'h History,
    /// Scenario 1.
    pub first: FirstSync,
    /// Scenario 4.
    pub open: OpenList,
    /// Scenario 5.
    pub edit: EditCost,
}

/// Rows for scenario 6: each size, then growth from the smallest to the largest.
pub fn growth_rows(sizes: &[AtSize<'_>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in sizes {
        let sc = format!("6 growth ({})", label(s.history));
        rows.push(Row::new(
            &sc,
            "first sync (ms)",
            s.first.duet_ms,
            "automerge sync, in-process",
            s.first.inproc_ms,
            Target::None,
        ));
        rows.push(Row::new(
            &sc,
            "open and list (ms)",
            s.open.duet_ms,
            "automerge load + read issues",
            s.open.bare_ms,
            Target::None,
        ));
        rows.push(Row::new(
            &sc,
            "bytes written per edit",
            s.edit.duet_bytes,
            "rewrite the saved document",
            s.edit.rewrite_bytes,
            Target::None,
        ));
        rows.push(Row::new(
            &sc,
            "time per edit (ms, median)",
            s.edit.duet_ms,
            "rewrite the saved document",
            s.edit.rewrite_ms,
            Target::None,
        ));
    }
    let (Some(small), Some(large)) = (sizes.first(), sizes.last()) else {
        return rows;
    };
    if small.history.years == large.history.years {
        return rows;
    }
    let sc = format!("6 growth {}y → {}y", small.history.years, large.history.years);
    let history = large.history.changes as f64 / small.history.changes.max(1) as f64;
    rows.push(Row::new(
        &sc,
        "first sync time, growth factor",
        large.first.duet_ms / small.first.duet_ms,
        "history growth (changes)",
        history,
        Target::RatioAtMost(1.5),
    ));
    rows.push(Row::new(
        &sc,
        "first sync time, growth factor",
        large.first.duet_ms / small.first.duet_ms,
        "automerge in-process growth",
        large.first.inproc_ms / small.first.inproc_ms,
        Target::None,
    ));
    rows.push(Row::new(
        &sc,
        "open and list time, growth factor",
        large.open.duet_ms / small.open.duet_ms,
        "history growth (changes)",
        history,
        Target::None,
    ));
    rows.push(Row::new(
        &sc,
        "time per edit, growth factor",
        large.edit.duet_ms / small.edit.duet_ms,
        "flat",
        1.0,
        Target::RatioAtMost(1.5),
    ));
    rows.push(Row::new(
        &sc,
        "bytes written per edit, growth factor",
        large.edit.duet_bytes / small.edit.duet_bytes,
        "flat",
        1.0,
        Target::RatioAtMost(1.5),
    ));
    rows
}

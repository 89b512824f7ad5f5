#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Sync over a bad network: real homes on disk and real QUIC on loopback, with
//! a UDP fault proxy (`common/udp_proxy.rs`) between the devices that drops,
//! duplicates, reorders and delays datagrams, or makes the path vanish.
//!
//! The faults come from a seed, printed by each test (shown when it fails).
//! `DUET_FAULT_SEED=N` replaces the base seed (the tests add 0, 1, 2 to it).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::udp_proxy::{Faults, ProxyStats, UdpProxy};
use common::{
    Shared, add_issue, assert_consistent, dir_of, has_title, heads, init, lock, pair, prose, record,
    start_serve, start_serve_dialling, sync, titles, wait_until,
};
use duet::model::{IssueEdit, IssueFilter, IssueStatus};
use duet::{Home, SyncReport, sync_once};

/// The seed of the test numbered `k`.
fn seed(k: u64) -> u64 {
    let base = std::env::var("DUET_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1);
    base.wrapping_add(k)
}

fn open(dir: &Path) -> Shared {
    Arc::new(Mutex::new(Home::open(dir).unwrap()))
}

/// Copies a home's folder (the home must be closed): the copy is the same
/// device, with the same record and the same sync states.
fn copy_home(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

const SHARED: &str = "Shared 0";
/// Issues each partner raises offline.
const OFFLINE_ISSUES: u64 = 55;

/// Sam and Alex, paired, then apart: each raises 55 issues (every eighth with
/// a ~9 KB body, so one change spans several datagrams) and both edit the same
/// issue at once (title, status, body, notes, tags). Returns their folders,
/// with the homes closed.
async fn diverged_pair(root: &Path) -> (PathBuf, PathBuf) {
    let sam = init(root, "Sam", "laptop");
    let alex = init(root, "Alex", "phone");
    for i in 0..3u64 {
        add_issue(&sam, &format!("Shared {i}"), &prose(500 + i, 30));
    }
    pair(&sam, &alex, false).await;
    let shared = lock(&sam)
        .issues(IssueFilter::default())
        .unwrap()
        .into_iter()
        .find(|i| i.title == SHARED)
        .unwrap();
    let id = shared.id.to_string();
    for (home, who, offset) in [(&sam, "Sam", 0u64), (&alex, "Alex", 10_000)] {
        for i in 0..OFFLINE_ISSUES {
            let words = if i % 8 == 0 { 1500 } else { 40 };
            add_issue(home, &format!("{who} {i}"), &prose(offset + i, words));
        }
        let mut h = lock(home);
        let body = if who == "Sam" {
            format!("SAM-START {}", shared.body)
        } else {
            format!("{} ALEX-END", shared.body)
        };
        h.edit_issue(
            &id,
            &IssueEdit {
                title: Some(format!("{SHARED} as {who} sees it")),
                body: Some(body),
                kind: None,
            },
        )
        .unwrap();
        let status = if who == "Sam" {
            IssueStatus::Discussing
        } else {
            IssueStatus::Agreed
        };
        h.set_status(&id, status).unwrap();
        h.add_note(&id, &format!("{who}'s note")).unwrap();
        h.tag_issue(&id, &who.to_lowercase()).unwrap();
    }
    let dirs = (dir_of(&sam), dir_of(&alex));
    drop((sam, alex));
    dirs
}

/// The merged record holds everything both wrote, with the concurrent edits
/// of the shared issue kept side by side.
fn assert_merged(home: &Shared, ctx: &str) {
    let t = titles(home);
    assert_eq!(
        t.len() as u64,
        3 + 2 * OFFLINE_ISSUES,
        "{ctx}: every issue of both, once"
    );
    assert!(has_title(home, "Sam 54") && has_title(home, "Alex 48"), "{ctx}");
    let issue = lock(home)
        .issues(IssueFilter::default())
        .unwrap()
        .into_iter()
        .find(|i| i.title.starts_with(SHARED))
        .unwrap();
    let fields: Vec<&str> = issue.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert!(
        fields.contains(&"title") && fields.contains(&"status"),
        "{ctx}: {fields:?}"
    );
    assert!(
        issue.body.starts_with("SAM-START ") && issue.body.ends_with(" ALEX-END"),
        "{ctx}: both body edits kept"
    );
    let notes: Vec<&str> = issue.notes.iter().map(|n| n.text.as_str()).collect();
    assert!(
        notes.contains(&"Sam's note") && notes.contains(&"Alex's note"),
        "{ctx}: {notes:?}"
    );
    assert_eq!(issue.tags, ["alex", "sam"], "{ctx}");
}

/// How one copy of the diverged pair synced.
struct Run {
    time: Duration,
    report: SyncReport,
    stats: Option<ProxyStats>,
    heads: Vec<automerge::ChangeHash>,
    record: serde_json::Value,
}

/// Alex syncs once with Sam's `serve`, directly or through a proxy with
/// `faults`; both must converge.
async fn run_copy(sam_dir: &Path, alex_dir: &Path, faults: Option<(Faults, u64)>, ctx: &str) -> Run {
    let (sam, alex) = (open(sam_dir), open(alex_dir));
    assert_ne!(heads(&sam), heads(&alex), "{ctx}: diverged before the sync");
    let server = start_serve(&sam).await;
    let proxy = match faults {
        Some((f, seed)) => Some(UdpProxy::start(server.addr, f, seed).await.unwrap()),
        None => None,
    };
    let addr = proxy.as_ref().map_or(server.addr, |p| p.addr());
    let started = Instant::now();
    let report = sync(&alex, addr)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: the sync failed: {e}"));
    let time = started.elapsed();
    assert_eq!(heads(&sam), heads(&alex), "{ctx}: same heads after one sync");
    assert_eq!(record(&sam), record(&alex), "{ctx}: same record");
    assert_merged(&alex, ctx);
    let stats = proxy.as_ref().map(UdpProxy::stats);
    drop(proxy);
    server.stop().await;
    let run = Run {
        time,
        report,
        stats,
        heads: heads(&sam),
        record: record(&sam),
    };
    drop((sam, alex));
    assert_eq!(assert_consistent(sam_dir), run.heads, "{ctx}: Sam's home on disk");
    assert_eq!(
        assert_consistent(alex_dir),
        run.heads,
        "{ctx}: Alex's home on disk"
    );
    run
}

/// The diverged pair, three times over (copies of the same two homes): synced
/// directly, through a clean proxy, and through a faulty one with `seed`. All
/// three converge to the very same record and heads.
async fn converges_through_faults(seed: u64, name: &str) {
    let ctx =
        format!("fault seed {seed} (rerun: DUET_FAULT_SEED={seed} cargo test -p duet --test faults {name})");
    eprintln!("{ctx}");
    let root = tempfile::tempdir().unwrap();
    let (sam_dir, alex_dir) = diverged_pair(&root.path().join("original")).await;
    let copies: Vec<(PathBuf, PathBuf)> = ["direct", "clean", "faulty"]
        .iter()
        .map(|k| {
            let (s, a) = (root.path().join(k).join("sam"), root.path().join(k).join("alex"));
            copy_home(&sam_dir, &s);
            copy_home(&alex_dir, &a);
            (s, a)
        })
        .collect();

    let direct = run_copy(&copies[0].0, &copies[0].1, None, &format!("{ctx}, direct")).await;
    let clean = run_copy(
        &copies[1].0,
        &copies[1].1,
        Some((Faults::none(), seed)),
        &format!("{ctx}, clean proxy"),
    )
    .await;
    let faulty = run_copy(
        &copies[2].0,
        &copies[2].1,
        Some((Faults::lossy(), seed)),
        &format!("{ctx}, faulty proxy"),
    )
    .await;

    // The faults changed nothing about the outcome.
    assert_eq!(faulty.heads, direct.heads, "{ctx}");
    assert_eq!(faulty.record, direct.record, "{ctx}");
    assert_eq!(clean.heads, direct.heads, "{ctx}");
    assert_eq!(faulty.report.changes_in, direct.report.changes_in, "{ctx}");

    let c = clean.stats.unwrap();
    assert!(c.forwarded > 0 && c.forwarded == c.received, "{ctx}: {c:?}");
    assert_eq!(
        (c.dropped, c.duplicated, c.reordered, c.blackholed),
        (0, 0, 0, 0),
        "{ctx}: the clean proxy is clean: {c:?}"
    );
    let f = faulty.stats.unwrap();
    assert!(
        f.dropped > 0 && f.duplicated > 0 && f.reordered > 0,
        "{ctx}: the faults happened: {f:?}"
    );
    assert_eq!(f.flows, 1, "{ctx}: one client, one flow");
    // QUIC resent what was lost: more datagrams crossed than on a clean path.
    assert!(f.received > c.received, "{ctx}: clean {c:?}, faulty {f:?}");

    let r = &direct.report;
    eprintln!(
        "seed {seed}: changes in at Alex {}, {} B in + {} B out, {} + {} messages\n  \
         direct:      {:>6} ms\n  clean proxy: {:>6} ms, {c:?}\n  faulty proxy: {:>5} ms, {f:?}\n  \
         faulty/direct time {:.1}x, faulty/clean datagrams {:.2}x, loss {:.1}%",
        r.changes_in,
        r.bytes_in,
        r.bytes_out,
        r.messages_in,
        r.messages_out,
        direct.time.as_millis(),
        clean.time.as_millis(),
        faulty.time.as_millis(),
        faulty.time.as_secs_f64() / direct.time.as_secs_f64(),
        f.received as f64 / c.received as f64,
        100.0 * f.dropped as f64 / f.received as f64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_homes_converge_through_a_faulty_path_1() {
    converges_through_faults(seed(0), "through_a_faulty_path_1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_homes_converge_through_a_faulty_path_2() {
    converges_through_faults(seed(1), "through_a_faulty_path_2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_homes_converge_through_a_faulty_path_3() {
    converges_through_faults(seed(2), "through_a_faulty_path_3").await;
}

/// Both devices run `serve`, each dialling the other through its own faulty
/// proxy (no direct path at all). Edits on either side, a burst of concurrent
/// ones, and one made while both paths are cut, all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_serves_stay_in_sync_through_faulty_paths() {
    let s = seed(3);
    let ctx = format!(
        "fault seed {s} (rerun: DUET_FAULT_SEED={} cargo test -p duet --test faults live_)",
        s.wrapping_sub(3)
    );
    eprintln!("{ctx}");
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    pair(&sam, &alex, false).await;

    // Each serve must be told the other's proxy before either listens.
    let to_sam = UdpProxy::unrouted(Faults::lossy(), s).await.unwrap();
    let to_alex = UdpProxy::unrouted(Faults::lossy(), s ^ 0x5EED).await.unwrap();
    let sam_server = start_serve_dialling(&sam, vec![to_alex.addr()]).await;
    let alex_server = start_serve_dialling(&alex, vec![to_sam.addr()]).await;
    to_sam.set_upstream(sam_server.addr);
    to_alex.set_upstream(alex_server.addr);
    let limit = Duration::from_secs(30);

    // One way, with a body of many datagrams.
    let started = Instant::now();
    let big = add_issue(&sam, "live from Sam", &prose(1, 1500));
    assert!(
        wait_until(limit, || has_title(&alex, "live from Sam")).await,
        "{ctx}: Sam's edit reached Alex"
    );
    let first = started.elapsed();
    assert_eq!(lock(&alex).issue(&big).unwrap().body, prose(1, 1500), "{ctx}");

    // The other way.
    let started = Instant::now();
    add_issue(&alex, "live from Alex", "short");
    lock(&alex).add_note(&big, "Alex read it").unwrap();
    assert!(
        wait_until(limit, || has_title(&sam, "live from Alex")).await,
        "{ctx}: Alex's edit reached Sam"
    );
    let back = started.elapsed();

    // Both at once, on the same issue too.
    let started = Instant::now();
    for i in 0..10 {
        add_issue(&sam, &format!("burst Sam {i}"), &prose(100 + i, 200));
        add_issue(&alex, &format!("burst Alex {i}"), &prose(200 + i, 200));
        lock(&sam).add_note(&big, &format!("Sam {i}")).unwrap();
        lock(&alex).add_note(&big, &format!("Alex {i}")).unwrap();
    }
    lock(&sam).set_status(&big, IssueStatus::Discussing).unwrap();
    lock(&alex).set_status(&big, IssueStatus::Parked).unwrap();
    let converged = wait_until(limit, || heads(&sam) == heads(&alex)).await;
    assert!(converged, "{ctx}: the burst converged");
    let burst = started.elapsed();
    assert_eq!(record(&sam), record(&alex), "{ctx}");
    assert_eq!(titles(&sam).len(), 2 + 20, "{ctx}");
    assert_eq!(lock(&sam).issue(&big).unwrap().notes.len(), 21, "{ctx}");

    // Both paths vanish for two seconds; an edit made meanwhile waits, then
    // arrives once the paths are back.
    to_sam.cut();
    to_alex.cut();
    add_issue(&sam, "during the outage", "");
    let leaked = wait_until(Duration::from_secs(2), || has_title(&alex, "during the outage")).await;
    assert!(!leaked, "{ctx}: nothing crosses a cut path");
    let healed = Instant::now();
    to_sam.heal();
    to_alex.heal();
    assert!(
        wait_until(limit, || has_title(&alex, "during the outage")).await,
        "{ctx}: the edit made during the outage arrived after it"
    );
    let after_outage = healed.elapsed();
    assert!(wait_until(limit, || heads(&sam) == heads(&alex)).await, "{ctx}");

    let (a, b) = (to_sam.stats(), to_alex.stats());
    for st in [a, b] {
        assert!(
            st.dropped > 0 && st.duplicated > 0 && st.reordered > 0 && st.blackholed > 0,
            "{ctx}: the faults happened: {st:?}"
        );
    }
    eprintln!(
        "live, seed {s}: Sam -> Alex (9 KB body) {} ms; Alex -> Sam {} ms; burst of 20+20 edits converged in {} ms; \
         edit made during a 2 s outage arrived {} ms after the paths came back\n  \
         proxy to Sam:  {a:?}\n  proxy to Alex: {b:?}",
        first.as_millis(),
        back.as_millis(),
        burst.as_millis(),
        after_outage.as_millis(),
    );

    sam_server.stop().await;
    alex_server.stop().await;
    let (sam_dir, alex_dir) = (dir_of(&sam), dir_of(&alex));
    let h = heads(&sam);
    drop((sam, alex));
    assert_eq!(assert_consistent(&sam_dir), h, "{ctx}");
    assert_eq!(assert_consistent(&alex_dir), h, "{ctx}");
}

/// Sam raises 150 issues (~2 KB each, ~300 KB in all) that Alex lacks;
/// returns their folders, with the homes closed.
async fn big_backlog(root: &Path) -> (PathBuf, PathBuf) {
    let sam = init(root, "Sam", "laptop");
    let alex = init(root, "Alex", "phone");
    pair(&sam, &alex, false).await;
    for i in 0..150u64 {
        add_issue(&sam, &format!("Big {i}"), &prose(i, 300));
    }
    let dirs = (dir_of(&sam), dir_of(&alex));
    drop((sam, alex));
    dirs
}

/// Every issue a home holds is exactly as its author wrote it.
fn assert_no_partial_issues(partial: &Shared, full: &Shared) {
    let whole: std::collections::HashMap<String, serde_json::Value> = lock(full)
        .issues(IssueFilter::default())
        .unwrap()
        .into_iter()
        .map(|i| (i.id.to_string(), serde_json::to_value(&i).unwrap()))
        .collect();
    for issue in lock(partial).issues(IssueFilter::default()).unwrap() {
        let id = issue.id.to_string();
        assert_eq!(
            Some(&serde_json::to_value(&issue).unwrap()),
            whole.get(&id),
            "issue {id} is whole"
        );
    }
}

/// The network path vanishes halfway through a large sync (not the process:
/// both devices stay up, their packets just stop arriving). The dialler gets
/// an error within a bounded time, both homes open and read consistently
/// during the wait and after it, and the next sync on a good path converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_vanishing_mid_sync_fails_in_bounded_time_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (sam_dir, alex_dir) = big_backlog(&root.path().join("original")).await;
    let copy = |k: &str| {
        let (s, a) = (root.path().join(k).join("sam"), root.path().join(k).join("alex"));
        copy_home(&sam_dir, &s);
        copy_home(&alex_dir, &a);
        (s, a)
    };

    // How many datagrams the whole sync takes on a clean path (a copy).
    let (cal_sam, cal_alex) = copy("calibration");
    let total = {
        let (sam, alex) = (open(&cal_sam), open(&cal_alex));
        let server = start_serve(&sam).await;
        let proxy = UdpProxy::start(server.addr, Faults::none(), 0).await.unwrap();
        let report = sync(&alex, proxy.addr()).await.unwrap();
        assert_eq!(heads(&sam), heads(&alex));
        assert_eq!(report.changes_in, 150);
        server.stop().await;
        proxy.stats().received
    };

    // The same sync, with the path cut after half of those datagrams.
    let (sam_dir, alex_dir) = copy("cut");
    let (sam, alex) = (open(&sam_dir), open(&alex_dir));
    let server = start_serve(&sam).await;
    let proxy = UdpProxy::start(server.addr, Faults::none(), 0).await.unwrap();
    proxy.cut_after(total / 2);
    let started = Instant::now();
    let syncing = tokio::spawn(sync_once(alex.clone(), proxy.addr()));
    assert!(
        wait_until(Duration::from_secs(30), || proxy.cut_at().is_some()).await,
        "the sync reached the cut"
    );
    let cut_at = proxy.cut_at().unwrap();
    let cut_after = cut_at - started;

    // While Alex's side still waits on the dead path, both homes open from
    // disk and read consistently.
    assert!(!syncing.is_finished(), "the sync noticed nothing yet");
    assert_consistent(&sam_dir);
    assert_consistent(&alex_dir);

    let outcome = tokio::time::timeout(Duration::from_secs(50), syncing)
        .await
        .expect("the sync over a vanished path ended within 50 s")
        .unwrap();
    let to_error = cut_at.elapsed();
    let error = outcome.expect_err("a sync over a vanished path cannot succeed");
    let st = proxy.stats();
    eprintln!(
        "path vanished {} ms into the sync, after {} of the {total} datagrams a whole sync takes; \
         the dialler's error came {} ms after the cut: {error}\n  proxy: {st:?}",
        cut_after.as_millis(),
        total / 2,
        to_error.as_millis(),
    );
    assert!(st.blackholed > 0, "traffic was still flowing at the cut: {st:?}");
    assert!(
        to_error < Duration::from_secs(45),
        "the error came {to_error:?} after the cut"
    );

    // Alex has Sam's issues whole or not at all; both homes are consistent.
    assert_ne!(heads(&sam), heads(&alex), "the sync was cut before its end");
    assert_no_partial_issues(&alex, &sam);
    assert_eq!(assert_consistent(&sam_dir), heads(&sam));
    assert_eq!(assert_consistent(&alex_dir), heads(&alex));

    // The next sync, on a good path to the same running serve, converges.
    drop(proxy);
    let again = sync(&alex, server.addr).await.unwrap();
    assert_eq!(heads(&sam), heads(&alex));
    assert_eq!(record(&sam), record(&alex));
    assert_eq!(
        titles(&alex).iter().filter(|t| t.starts_with("Big ")).count(),
        150
    );
    eprintln!("the next sync, direct: {again:?}");
    server.stop().await;
    let h = heads(&sam);
    drop((sam, alex));
    assert_eq!(assert_consistent(&sam_dir), h);
    assert_eq!(assert_consistent(&alex_dir), h);
}

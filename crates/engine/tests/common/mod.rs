//! Helpers shared by the engine's integration tests: homes on disk, pairing
//! and `serve` over real loopback QUIC, reading homes to compare them, and a
//! UDP fault proxy ([`udp_proxy`]).
//!
//! The helpers are copies of those at the top of `tests/sync.rs` (same names,
//! same behaviour), so that file can switch to this module.

// Each test binary that includes this module uses only some of it.
#![allow(dead_code)]

pub mod forger;
pub mod udp_proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use duet::model::{DeviceId, IssueFilter, NewIssue};
use duet::{
    Home, InitOptions, PairHost, PairOutcome, PendingJoin, ServeOptions, SyncReport, WhoseDevice, pair_join,
    serve, sync_once,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// A home as `serve` and `sync_once` take it.
pub type Shared = Arc<Mutex<Home>>;

/// How long any one network step of a test may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

/// Any free port on loopback.
pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The home behind a [`Shared`].
pub fn lock(home: &Shared) -> MutexGuard<'_, Home> {
    home.lock().unwrap()
}

/// Runs `f`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

/// A new home in `root/device`, with a new space.
pub fn init(root: &Path, name: &str, device: &str) -> Shared {
    let home = Home::init(
        &root.join(device),
        &InitOptions {
            name: name.into(),
            device_name: Some(device.into()),
        },
    )
    .unwrap();
    Arc::new(Mutex::new(home))
}

/// The home's folder.
pub fn dir_of(home: &Shared) -> PathBuf {
    lock(home).dir().to_path_buf()
}

/// The home's device.
pub fn device_of(home: &Shared) -> DeviceId {
    lock(home).device_id()
}

/// Pairs `joiner` into `host`'s space over loopback, as the people would: the
/// host chooses whose device it is (`own_device`: another of the host's
/// person, else the partner's), and admits it only once the phrase the joiner
/// shows is the one the host shows. Returns (host side, joiner side).
pub async fn pair(host: &Shared, joiner: &Shared, own_device: bool) -> (PairOutcome, PairOutcome) {
    let whose = if own_device {
        WhoseDevice::Mine
    } else {
        WhoseDevice::Partner
    };
    let (pending, joining, shown) = start_pairing(host, joiner, whose);
    let pending = within("pair host", pending).await.unwrap();
    let phrase = within("the joiner's phrase", shown).await.unwrap();
    assert_eq!(pending.phrase(), phrase, "the two screens differ");
    let hosted = within("admit", pending.admit()).await.unwrap();
    let joined = within("pair join", joining).await.unwrap().unwrap();
    (hosted, joined)
}

/// Starts pairing `joiner` into `host`'s space: the host's wait for a device
/// (to answer), the joiner's task, and the phrase the joiner will show.
pub fn start_pairing(
    host: &Shared,
    joiner: &Shared,
    whose: WhoseDevice,
) -> (
    impl Future<Output = duet::Result<PendingJoin>> + use<>,
    JoinHandle<duet::Result<PairOutcome>>,
    oneshot::Receiver<String>,
) {
    let pairing = PairHost::bind(host.clone(), loopback(), None, whose).unwrap();
    let addr = pairing.local_addr().unwrap();
    let code = pairing.code().to_string();
    let (show, shown) = oneshot::channel();
    let joiner = joiner.clone();
    let joining = tokio::spawn(async move {
        pair_join(joiner, &code, addr, move |p: &str| {
            let _ = show.send(p.to_string());
        })
        .await
    });
    (pairing.wait(STEP), joining, shown)
}

/// A running `serve`.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Set to true to stop it.
    pub stop: watch::Sender<bool>,
    /// The task running it.
    pub task: JoinHandle<duet::Result<()>>,
}

/// `serve` on a loopback port.
pub async fn start_serve(home: &Shared) -> Server {
    start_serve_dialling(home, Vec::new()).await
}

/// `serve`, also keeping live sessions with `peers`.
pub async fn start_serve_dialling(home: &Shared, peers: Vec<SocketAddr>) -> Server {
    start_serve_with(
        home,
        ServeOptions {
            peers,
            poll: Duration::from_millis(50),
            ..ServeOptions::new(loopback())
        },
    )
    .await
}

/// `serve` with `opts`.
pub async fn start_serve_with(home: &Shared, opts: ServeOptions) -> Server {
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(serve(home.clone(), opts, stop_rx, Some(ready_tx)));
    let addr = within("serve to listen", ready_rx).await.unwrap();
    // After `serve` made sure the space has a key.
    let name = lock(home).sync_server_name().unwrap();
    NAMES.lock().unwrap().insert(addr, name);
    Server { addr, stop, task }
}

/// The TLS server name of each serve started by [`start_serve_with`].
static NAMES: Mutex<BTreeMap<SocketAddr, String>> = Mutex::new(BTreeMap::new());

/// The server name a member of the couple served at `addr` dials it with
/// (a serve shows its key only to a client that sends it), for tests that
/// speak TLS by hand; the fixed name for an address no serve was started at.
pub fn server_name(addr: SocketAddr) -> String {
    NAMES
        .lock()
        .unwrap()
        .get(&addr)
        .cloned()
        .unwrap_or_else(|| duet_sync::net::tls::SERVER_NAME.to_string())
}

impl Server {
    /// The serve is still running, and its home's lock was never poisoned by a
    /// panic in one of its sessions.
    pub fn assert_alive(&self, home: &Shared) {
        assert!(!self.task.is_finished(), "the serve stopped");
        assert!(!home.is_poisoned(), "a session panicked while holding the home");
    }

    /// Stops it and checks that it ended cleanly.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        within("serve to stop", self.task).await.unwrap().unwrap();
    }
}

/// `sync_once` with `addr`, within [`STEP`].
pub async fn sync(home: &Shared, addr: SocketAddr) -> duet::Result<SyncReport> {
    within("sync_once", sync_once(home.clone(), addr)).await
}

/// The change log as (seq, hash), newest first.
pub fn log(home: &Shared) -> Vec<(i64, String)> {
    lock(home)
        .log(None)
        .unwrap()
        .into_iter()
        .map(|l| (l.seq, l.hash))
        .collect()
}

/// The document's heads.
pub fn heads(home: &Shared) -> Vec<ChangeHash> {
    lock(home).read(|d| d.get_heads()).unwrap()
}

/// Every issue's title, sorted.
pub fn titles(home: &Shared) -> Vec<String> {
    let mut t: Vec<String> = lock(home)
        .issues(IssueFilter::default())
        .unwrap()
        .into_iter()
        .map(|i| i.title)
        .collect();
    t.sort();
    t
}

/// Whether an issue has this title.
pub fn has_title(home: &Shared, title: &str) -> bool {
    titles(home).iter().any(|t| t == title)
}

/// Raises an issue; returns its id.
pub fn add_issue(home: &Shared, title: &str, body: &str) -> String {
    lock(home)
        .add_issue(&NewIssue {
            title: title.into(),
            body: body.into(),
            ..Default::default()
        })
        .unwrap()
        .id
        .to_string()
}

/// Everything a person sees of the shared record, as JSON, to compare homes.
pub fn record(home: &Shared) -> serde_json::Value {
    let mut h = lock(home);
    serde_json::json!({
        "issues": serde_json::to_value(h.issues(IssueFilter::default()).unwrap()).unwrap(),
        "checkins": serde_json::to_value(h.checkins().unwrap()).unwrap(),
        "agreements": serde_json::to_value(h.agreements().unwrap()).unwrap(),
        "people": serde_json::to_value(h.people().unwrap()).unwrap(),
        "devices": serde_json::to_value(h.devices().unwrap()).unwrap(),
    })
}

/// The home's log and its document agree: every logged change is in the
/// document and the other way round, and the document opens from disk.
/// Returns the heads of the home as opened from disk.
pub fn assert_consistent(dir: &Path) -> Vec<ChangeHash> {
    let mut h = Home::open(dir).expect("the home opens again");
    h.status().expect("its status reads");
    let logged: Vec<String> = h.log(None).unwrap().into_iter().map(|l| l.hash).collect();
    let mut in_doc: Vec<String> = h
        .read(|d| d.get_changes(&[]).iter().map(|c| c.hash().to_string()).collect())
        .unwrap();
    let mut logged_sorted = logged.clone();
    logged_sorted.sort();
    in_doc.sort();
    assert_eq!(
        logged_sorted, in_doc,
        "the log and the document hold the same changes"
    );
    h.read(|d| d.get_heads()).unwrap()
}

/// Deterministic text of `words` made-up words (3 to 9 letters): about as
/// hard to compress as real prose, so compressed sizes are not flattered.
pub fn prose(seed: u64, words: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::new();
    for w in 0..words {
        if w > 0 {
            out.push(' ');
        }
        let len = 3 + next() % 7;
        for _ in 0..len {
            out.push(char::from(b"etaoinshrdlucmfwypvbgk"[(next() % 22) as usize]));
        }
    }
    out
}

/// Waits up to `limit` for `cond`, checking every 50 ms.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A test that cannot run on this machine (no multicast, no tmpfs, no node)
/// says why and passes, unless the variable `require` is set (CI sets each
/// one in `.ci/run`): there a skip would hide a test that never ran, so it
/// fails instead.
pub fn skip(require: &str, why: &str) {
    assert!(
        std::env::var_os(require).is_none(),
        "{why} (and {require} is set: this test must run here)"
    );
    eprintln!("skipped: {why}");
}

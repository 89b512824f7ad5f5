#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The relay over real loopback QUIC: a server from `duet_relay::run` and
//! devices with `RelayClient`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duet_model::{DeviceId, DeviceSecret};
use duet_relay::client::CONNECTION_REFUSED;
use duet_relay::gate::GateLimits;
use duet_relay::service::{
    NOT_LISTED, QUOTA_FULL, RELAY_FULL, TOO_MANY_SPACES_ADDRESS, TOO_MANY_SPACES_DEVICE,
};
use duet_relay::{RelayClient, RelayError, RelayOptions};
use duet_sync::proto::relay::{MAX_RELAY_BUNDLE, Request, SignedAccess, SpaceTag};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NO_WAIT: Duration = Duration::ZERO;

/// A running relay.
struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RelayError>>,
}

impl Running {
    async fn start(data: Option<&Path>, quota_bytes: Option<u64>) -> Running {
        Running::start_with(data, |opts| {
            if let Some(q) = quota_bytes {
                opts.quota_bytes = q;
            }
        })
        .await
    }

    /// A relay with options changed by `set`.
    async fn start_with(data: Option<&Path>, set: impl FnOnce(&mut RelayOptions)) -> Running {
        let mut opts = RelayOptions::new("127.0.0.1:0".parse().unwrap());
        opts.data = data.map(Path::to_path_buf);
        set(&mut opts);
        let (stop, stop_rx) = watch::channel(false);
        let (ready, ready_rx) = oneshot::channel();
        let task = tokio::spawn(duet_relay::run(opts, stop_rx, Some(ready)));
        let addr = tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .expect("the relay did not start in time")
            .expect("the relay failed to start");
        Running { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the relay did not stop in time")
            .unwrap();
        result.unwrap();
    }
}

fn secret(n: u8) -> DeviceSecret {
    DeviceSecret::from_bytes(&[n; 32])
}

fn dev(n: u8) -> DeviceId {
    secret(n).device_id()
}

async fn client(relay: &Running, n: u8) -> RelayClient {
    RelayClient::connect(relay.addr, &secret(n)).await.unwrap()
}

/// Device `n`, connecting from the loopback address `127.0.0.<host>` (all
/// of 127.0.0.0/8 is loopback on Linux): another address to the relay.
async fn client_from(relay: &Running, n: u8, host: u8) -> Result<RelayClient, RelayError> {
    let bind = SocketAddr::from(([127, 0, 0, host], 0));
    RelayClient::connect_from(bind, relay.addr, &secret(n)).await
}

fn list(signer: u8, space: SpaceTag, serial: u64, devices: &[u8]) -> SignedAccess {
    SignedAccess::sign(&secret(signer), space, serial, devices.iter().map(|d| dev(*d))).unwrap()
}

fn refusal(r: Result<impl std::fmt::Debug, RelayError>) -> String {
    match r {
        Err(RelayError::Refused(text)) => text,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn seqs(items: &[(u64, Vec<u8>)]) -> Vec<u64> {
    items.iter().map(|i| i.0).collect()
}

/// A space shared by devices 1 and 2 (and more), registered by device 1.
async fn register(a: &RelayClient, space: SpaceTag, devices: &[u8]) {
    assert_eq!(
        a.access(space).await.unwrap(),
        None,
        "a new space reads as unknown"
    );
    a.set_access(list(1, space, 1, devices)).await.unwrap();
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_post_and_fetch_each_others_bundles() {
    let relay = Running::start(None, None).await;
    let space = SpaceTag::of("space-one");
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, space, &[1, 2]).await;
    assert_eq!(b.access(space).await.unwrap(), Some(list(1, space, 1, &[1, 2])));

    assert_eq!(a.post(space, b"first").await.unwrap(), 1);
    assert_eq!(a.post(space, vec![7u8; 1 << 20]).await.unwrap(), 2);
    assert_eq!(b.post(space, b"from b").await.unwrap(), 3);

    let (items, more) = b.fetch(space, 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&items), vec![1, 2], "b gets a's bundles, not its own");
    assert_eq!(items[0].1, b"first");
    assert_eq!(items[1].1, vec![7u8; 1 << 20]);
    assert!(!more);
    let (items, _) = a.fetch(space, 0, NO_WAIT).await.unwrap();
    assert_eq!(items, vec![(3, b"from b".to_vec())]);
    assert!(b.fetch(space, 2, NO_WAIT).await.unwrap().0.is_empty());

    // The largest bundle goes through whole (its frame is over the sync
    // protocol's 32 MiB frame limit).
    let big: Vec<u8> = (0..MAX_RELAY_BUNDLE).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    assert_eq!(a.post(space, &big).await.unwrap(), 4);
    let posted = started.elapsed();
    let (items, more) = b.fetch(space, 2, NO_WAIT).await.unwrap();
    println!(
        "32 MiB bundle: posted in {posted:?}, fetched in {:?}",
        started.elapsed() - posted
    );
    assert_eq!(seqs(&items), vec![4]);
    assert!(items[0].1 == big, "the bundle came back altered");
    assert!(!more);
    // One byte more is refused before it is sent.
    let over = a.post(space, vec![0u8; MAX_RELAY_BUNDLE + 1]).await;
    assert!(
        matches!(&over, Err(RelayError::Request(t)) if t.contains("bundle")),
        "{over:?}"
    );
    a.close().await;
    b.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_can_neither_post_nor_fetch_nor_read_the_access_list() {
    let relay = Running::start(None, None).await;
    let space = SpaceTag::of("space-two");
    let (a, stranger) = (client(&relay, 1).await, client(&relay, 9).await);
    register(&a, space, &[1, 2]).await;
    a.post(space, b"private").await.unwrap();

    assert_eq!(refusal(stranger.access(space).await), NOT_LISTED);
    assert_eq!(refusal(stranger.fetch(space, 0, NO_WAIT).await), NOT_LISTED);
    assert_eq!(refusal(stranger.post(space, b"junk").await), NOT_LISTED);
    // A large post is refused from its first bytes, and the refusal still
    // reaches the client although the relay stopped reading.
    let started = Instant::now();
    assert_eq!(
        refusal(stranger.post(space, vec![0u8; 8 << 20]).await),
        NOT_LISTED
    );
    println!("8 MiB stranger post refused in {:?}", started.elapsed());
    // Nor can it take the space over, whatever the serial.
    let takeover = refusal(stranger.set_access(list(9, space, 99, &[9])).await);
    assert_eq!(takeover, NOT_LISTED);
    // Nor replay a member's list as its own.
    let replayed = refusal(stranger.set_access(list(1, space, 2, &[1, 2, 9])).await);
    assert!(
        replayed.contains("signed by the device that sends it"),
        "{replayed}"
    );

    assert_eq!(a.access(space).await.unwrap(), Some(list(1, space, 1, &[1, 2])));
    // The stranger's attempts stored nothing: the member sees only its own seq.
    assert_eq!(a.post(space, b"next").await.unwrap(), 2);
    stranger.close().await;
    a.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_from_the_list_can_no_longer_fetch() {
    let relay = Running::start(None, None).await;
    let space = SpaceTag::of("space-three");
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, space, &[1, 2]).await;
    a.post(space, b"before").await.unwrap();
    assert_eq!(seqs(&b.fetch(space, 0, NO_WAIT).await.unwrap().0), vec![1]);

    // Device 1 removes device 2 (as after a revocation).
    a.set_access(list(1, space, 2, &[1])).await.unwrap();
    a.post(space, b"after").await.unwrap();
    // Over the connection it already had open.
    assert_eq!(refusal(b.fetch(space, 0, NO_WAIT).await), NOT_LISTED);
    assert_eq!(refusal(b.post(space, b"x").await), NOT_LISTED);
    assert_eq!(refusal(b.access(space).await), NOT_LISTED);
    assert_eq!(
        refusal(b.set_access(list(2, space, 3, &[1, 2])).await),
        NOT_LISTED
    );
    // And over a new one.
    let b2 = client(&relay, 2).await;
    assert_eq!(refusal(b2.fetch(space, 1, NO_WAIT).await), NOT_LISTED);
    // An older list cannot be replayed to bring it back.
    let old = refusal(a.set_access(list(1, space, 1, &[1, 2])).await);
    assert!(old.contains("newer access list"), "{old}");
    for c in [a, b, b2] {
        c.close().await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_undelivered_bundles_and_the_relay_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    let space = SpaceTag::of("space-four");

    let relay = Running::start(Some(&data), None).await;
    let a = client(&relay, 1).await;
    let key = a.relay_key().unwrap();
    register(&a, space, &[1, 2]).await;
    assert_eq!(a.post(space, b"one").await.unwrap(), 1);
    assert_eq!(a.post(space, b"two").await.unwrap(), 2);
    a.close().await;
    relay.stop().await;

    let relay = Running::start(Some(&data), None).await;
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    assert_eq!(b.relay_key(), Some(key), "the relay keeps its key");
    assert_eq!(b.access(space).await.unwrap(), Some(list(1, space, 1, &[1, 2])));
    let (items, _) = b.fetch(space, 0, NO_WAIT).await.unwrap();
    assert_eq!(items, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
    assert_eq!(a.post(space, b"three").await.unwrap(), 3, "numbers continue");
    a.close().await;
    b.close().await;
    relay.stop().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("relay.key")), 0o600);
        assert_eq!(mode(&data.join("relay.db")), 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_bundles_expire_once_every_other_device_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    let space = SpaceTag::of("space-five");
    let relay = Running::start(Some(&data), None).await;
    let (a, b, c) = (
        client(&relay, 1).await,
        client(&relay, 2).await,
        client(&relay, 3).await,
    );
    register(&a, space, &[1, 2, 3]).await;
    a.post(space, b"for b and c").await.unwrap();

    assert_eq!(seqs(&b.fetch(space, 0, NO_WAIT).await.unwrap().0), vec![1]);
    assert!(b.fetch(space, 1, NO_WAIT).await.unwrap().0.is_empty()); // b acknowledges 1
    assert_eq!(
        seqs(&b.fetch(space, 0, NO_WAIT).await.unwrap().0),
        vec![1],
        "kept while c has not acknowledged it"
    );
    assert_eq!(seqs(&c.fetch(space, 0, NO_WAIT).await.unwrap().0), vec![1]);
    assert!(c.fetch(space, 1, NO_WAIT).await.unwrap().0.is_empty()); // c acknowledges 1
    assert!(
        b.fetch(space, 0, NO_WAIT).await.unwrap().0.is_empty(),
        "deleted once every other device acknowledged it"
    );
    for x in [a, b, c] {
        x.close().await;
    }
    relay.stop().await;
    let db = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let left: i64 = db
        .query_row("SELECT count(*) FROM bundles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "gone from the relay's database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_the_quota_are_refused() {
    let relay = Running::start(None, Some(1 << 20)).await;
    let space = SpaceTag::of("space-six");
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, space, &[1, 2]).await;
    let part = vec![1u8; 600 * 1024];
    assert_eq!(a.post(space, &part).await.unwrap(), 1);
    assert_eq!(refusal(a.post(space, &part).await), QUOTA_FULL);
    assert_eq!(
        refusal(b.post(space, &part).await),
        QUOTA_FULL,
        "the quota is per space"
    );
    // Another space has its own.
    let other = SpaceTag::of("space-six-b");
    register(&a, other, &[1, 2]).await;
    assert_eq!(a.post(other, &part).await.unwrap(), 1);
    // Once b has the first bundle and says so, there is room again.
    assert_eq!(seqs(&b.fetch(space, 0, NO_WAIT).await.unwrap().0), vec![1]);
    b.fetch(space, 1, NO_WAIT).await.unwrap();
    assert_eq!(a.post(space, &part).await.unwrap(), 2);
    a.close().await;
    b.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_returns_when_a_bundle_is_posted() {
    let relay = Running::start(None, None).await;
    let space = SpaceTag::of("space-seven");
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, space, &[1, 2]).await;

    // With nothing to fetch, the relay holds the fetch for the time asked.
    let started = Instant::now();
    assert!(
        b.fetch(space, 0, Duration::from_millis(400))
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(400), "answered after {held:?}");

    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = b.fetch(space, 0, Duration::from_secs(20)).await;
        (r, started.elapsed(), b)
    });
    // Give the fetch time to reach the relay (a loopback round trip), and
    // check it is still held when the bundle is posted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the fetch returned with nothing to hand out"
    );
    assert_eq!(a.post(space, b"wake up").await.unwrap(), 1);
    let (r, took, b) = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiting fetch did not return")
        .unwrap();
    let (items, _) = r.unwrap();
    assert_eq!(items, vec![(1, b"wake up".to_vec())]);
    println!("waiting fetch answered {took:?} after it was sent");
    assert!(took < Duration::from_secs(10), "answered only after {took:?}");
    a.close().await;
    b.close().await;
    relay.stop().await;
}

/// A device that gives up on long fetches (as `serve` does when it has
/// something to post) does not use up its share of requests: the relay stops
/// waiting for an abandoned fetch, so the next requests are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_fetches_do_not_hold_the_devices_share() {
    let relay = Running::start(None, None).await;
    let space = SpaceTag::of("space-eight");
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, space, &[1, 2]).await;
    // More abandoned 20-second fetches than the 16 requests a device may have
    // open at once.
    for _ in 0..24 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(30),
            b.fetch(space, 0, Duration::from_secs(20)),
        );
        assert!(
            gave_up.await.is_err(),
            "a fetch with nothing to hand out returned"
        );
    }
    // Nothing was posted (a post would wake every waiting fetch): the next
    // request of the device must not wait behind the abandoned ones.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), b.access(space))
        .await
        .expect("a request waited behind abandoned fetches")
        .unwrap();
    println!(
        "a request after 24 abandoned fetches answered in {:?}",
        started.elapsed()
    );
    assert_eq!(a.post(space, b"after the abandoned fetches").await.unwrap(), 1);
    let started = Instant::now();
    let (items, _) = tokio::time::timeout(Duration::from_secs(5), b.fetch(space, 0, Duration::ZERO))
        .await
        .expect("the fetch waited behind abandoned ones")
        .unwrap();
    assert_eq!(seqs(&items), vec![1]);
    println!(
        "fetch after 24 abandoned ones answered in {:?}",
        started.elapsed()
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_files_hold_no_plaintext() {
    use chacha20poly1305::XChaCha20Poly1305;
    use chacha20poly1305::aead::{Aead, KeyInit};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    let space_id = "b7e3d1c0a9f84e2db7e3d1c0a9f84e2d";
    let marker = b"MARKER: our anniversary dinner plan, plaintext-4417";
    let space = SpaceTag::of(space_id);

    // Seal the marker as a bundle is sealed (the relay only ever sees this).
    let cipher = XChaCha20Poly1305::new((&[42u8; 32]).into());
    let nonce = [9u8; 24];
    let mut bundle = nonce.to_vec();
    bundle.extend(cipher.encrypt((&nonce).into(), &marker[..]).unwrap());
    assert!(!contains(&bundle, marker));

    let relay = Running::start(Some(&data), None).await;
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, space, &[1, 2]).await;
    a.post(space, &bundle).await.unwrap();
    let (items, _) = b.fetch(space, 0, NO_WAIT).await.unwrap();
    assert_eq!(items, vec![(1, bundle.clone())]);
    a.close().await;
    b.close().await;
    relay.stop().await;

    let stored = files(&data);
    assert!(!stored.is_empty());
    // The search does see what the relay stores: the sealed bytes are there.
    assert!(
        stored.iter().any(|(_, bytes)| contains(bytes, &bundle)),
        "the sealed bundle is not in the relay's files: the search below proves nothing"
    );
    for (path, bytes) in &stored {
        assert!(!contains(bytes, marker), "{} holds the plaintext", path.display());
        assert!(
            !contains(bytes, space_id.as_bytes()),
            "{} holds the space id",
            path.display()
        );
    }
}

/// A raw stream to the relay as device `n`, for requests the client would
/// never send.
async fn raw_stream(relay: &Running, n: u8) -> (quinn::Endpoint, quinn::SendStream, quinn::RecvStream) {
    use duet_sync::net::tls::{self, ALPN_RELAY, AnyDevice};
    let config = tls::client_config(&secret(n), std::sync::Arc::new(AnyDevice), ALPN_RELAY).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(config, relay.addr, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    (endpoint, send, recv)
}

/// Reads one answer frame within 5 s.
async fn raw_answer(recv: &mut quinn::RecvStream) -> duet_sync::proto::relay::Response {
    use duet_sync::proto::frame::Frame;
    let read = async {
        let mut header = [0u8; 4];
        recv.read_exact(&mut header).await.unwrap();
        let len = duet_sync::proto::relay::announced(header).unwrap();
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.unwrap();
        duet_sync::proto::relay::Response::decode(&Frame {
            kind: body[0],
            payload: body[1..].to_vec(),
        })
        .unwrap()
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("no answer before the rest of the request was sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_refused_from_their_first_bytes() {
    use duet_sync::proto::relay::{POST, Response};
    let relay = Running::start(None, Some(1 << 20)).await;
    let space = SpaceTag::of("space-eight");
    let a = client(&relay, 1).await;
    register(&a, space, &[1, 2]).await;

    // The header and tag of a 32 MiB post, and nothing more: a relay that
    // waited for the bundle would not answer before its 30 s timeout.
    let frame = Request::encode_post(space, &vec![0u8; MAX_RELAY_BUNDLE]).unwrap();
    for (device, expected) in [(9, NOT_LISTED), (1, QUOTA_FULL)] {
        let (endpoint, mut send, mut recv) = raw_stream(&relay, device).await;
        assert_eq!(frame[4], POST);
        send.write_all(&frame[..4 + 17]).await.unwrap();
        assert_eq!(raw_answer(&mut recv).await, Response::Failure(expected.into()));
        endpoint.close(0u32.into(), b"done");
    }

    // A request other than a post must be small: refused from its header.
    let (endpoint, mut send, mut recv) = raw_stream(&relay, 1).await;
    let mut header = (1u32 << 20).to_be_bytes().to_vec();
    header.push(duet_sync::proto::relay::ACCESS);
    send.write_all(&header).await.unwrap();
    let Response::Failure(text) = raw_answer(&mut recv).await else {
        panic!("an oversized request was not refused")
    };
    assert!(text.contains("over its limit"), "{text}");
    endpoint.close(0u32.into(), b"done");

    // The relay still serves the device normally.
    assert_eq!(a.post(space, b"small").await.unwrap(), 1);
    a.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_cannot_register_spaces_past_its_limit_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    let limited = |o: &mut RelayOptions| o.max_spaces_per_device = 2;
    let relay = Running::start_with(Some(&data), limited).await;
    let a = client(&relay, 1).await;
    for k in 0..2 {
        register(&a, SpaceTag::of(&format!("mine-{k}")), &[1, 2]).await;
    }
    let third = SpaceTag::of("mine-2");
    assert_eq!(
        refusal(a.set_access(list(1, third, 1, &[1, 2])).await),
        TOO_MANY_SPACES_DEVICE
    );
    a.close().await;
    relay.stop().await;

    // The count is kept with the spaces.
    let relay = Running::start_with(Some(&data), limited).await;
    let a = client(&relay, 1).await;
    assert_eq!(
        refusal(a.set_access(list(1, third, 1, &[1, 2])).await),
        TOO_MANY_SPACES_DEVICE
    );
    assert_eq!(a.access(third).await.unwrap(), None, "nothing was stored");
    // Its own spaces' lists can still change.
    let mine = SpaceTag::of("mine-0");
    a.set_access(list(1, mine, 2, &[1, 2, 3])).await.unwrap();
    a.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_from_one_address_cannot_register_spaces_past_its_limit() {
    let relay = Running::start_with(None, |o| o.max_spaces_per_address = 3).await;
    for n in 1..=3u8 {
        let c = client(&relay, n).await;
        let space = SpaceTag::of(&format!("fresh-{n}"));
        c.set_access(list(n, space, 1, &[n])).await.unwrap();
        c.close().await;
    }
    for n in 4..=5u8 {
        let c = client(&relay, n).await;
        let space = SpaceTag::of(&format!("fresh-{n}"));
        assert_eq!(
            refusal(c.set_access(list(n, space, 1, &[n])).await),
            TOO_MANY_SPACES_ADDRESS
        );
        c.close().await;
    }
    // A device at another address is still served.
    let other = client_from(&relay, 6, 2).await.unwrap();
    let space = SpaceTag::of("fresh-6");
    other.set_access(list(6, space, 1, &[6])).await.unwrap();
    assert_eq!(other.post(space, b"hello").await.unwrap(), 1);
    other.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_cap_refuses_a_post_and_keeps_what_is_kept() {
    let relay = Running::start_with(None, |o| o.max_storage_bytes = 1 << 20).await;
    let (ours, theirs) = (SpaceTag::of("cap-ours"), SpaceTag::of("cap-theirs"));
    let (a, b) = (client(&relay, 1).await, client(&relay, 2).await);
    register(&a, ours, &[1, 2]).await;
    let part: Vec<u8> = (0..600 * 1024).map(|i| (i % 241) as u8).collect();
    assert_eq!(a.post(ours, &part).await.unwrap(), 1);

    // Another couple fills the rest: refused, from the post's first bytes
    // (its bundle is larger than a QUIC window).
    let c = client(&relay, 3).await;
    c.set_access(list(3, theirs, 1, &[3, 4])).await.unwrap();
    assert_eq!(refusal(c.post(theirs, &part).await), RELAY_FULL);
    assert_eq!(refusal(a.post(ours, &part).await), RELAY_FULL, "for everyone");

    // What was kept is whole.
    let (items, _) = b.fetch(ours, 0, NO_WAIT).await.unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].1 == part, "the kept bundle came back altered");
    // Once delivered, there is room again.
    b.fetch(ours, 1, NO_WAIT).await.unwrap();
    assert_eq!(c.post(theirs, &part).await.unwrap(), 1);
    for x in [a, b, c] {
        x.close().await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_handshakes_from_one_address_is_refused_while_another_is_served() {
    let relay = Running::start_with(None, |o| {
        o.gate = GateLimits {
            handshake_burst: 4,
            // Nothing earned back within the test.
            handshakes_per_minute: 1,
            ..GateLimits::default()
        }
    })
    .await;
    let mut held = Vec::new();
    for n in 1..=4u8 {
        let started = Instant::now();
        held.push(client(&relay, n).await);
        println!(
            "connect {n} (address retry and handshake): {:?}",
            started.elapsed()
        );
    }
    // Fresh keys cannot get around it, and the refusal says what happened.
    for n in 5..=6u8 {
        let started = Instant::now();
        let refused = RelayClient::connect(relay.addr, &secret(n)).await;
        println!("refused connect {n}: {:?}", started.elapsed());
        assert_eq!(refusal(refused), CONNECTION_REFUSED);
    }
    // Another address is served, and so are the connections already open.
    let other = client_from(&relay, 7, 3).await.unwrap();
    assert_eq!(other.access(SpaceTag::of("burst")).await.unwrap(), None);
    assert_eq!(held[0].access(SpaceTag::of("burst")).await.unwrap(), None);
    other.close().await;
    for c in held {
        c.close().await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_from_one_address_cannot_take_every_connection() {
    let relay = Running::start_with(None, |o| {
        o.gate = GateLimits {
            connections_per_address: 3,
            ..GateLimits::default()
        }
    })
    .await;
    let mut held = Vec::new();
    for n in 1..=3u8 {
        held.push(client(&relay, n).await);
    }
    let refused = RelayClient::connect(relay.addr, &secret(4)).await;
    assert_eq!(refusal(refused), CONNECTION_REFUSED);
    let other = client_from(&relay, 5, 4).await.unwrap();
    assert_eq!(other.access(SpaceTag::of("slots")).await.unwrap(), None);
    // A closed connection frees its slot (once the relay has seen it close).
    held.pop().unwrap().close().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        match RelayClient::connect(relay.addr, &secret(4)).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "the slot was never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    again.close().await;
    other.close().await;
    for c in held {
        c.close().await;
    }
    relay.stop().await;
}

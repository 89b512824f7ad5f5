#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile peers against a real `serve`, over real QUIC on loopback.
//!
//! Each attacker here holds a real key: a member device of the couple (the
//! worst case: a stolen or compromised phone), a device revoked since, or a
//! stranger. The members speak the sync protocol by hand (frames written
//! straight to the QUIC stream), so they can send what no honest device would:
//! oversized frames, malformed change bytes under valid signatures, old
//! messages again, or nothing at all.
//!
//! Already covered elsewhere, and not repeated here:
//! - forged and tampered signatures, a member forging another member's
//!   changes, and a refused session not blocking the next honest one, over
//!   QUIC: `tests/sync.rs`, sections 2 and 3;
//! - a revoked device refused in TLS (one attempt against each partner's
//!   serve), and a running serve learning of a revocation: `tests/sync.rs`,
//!   section 5;
//! - a stranger's key refused during the TLS handshake, a client claiming a
//!   key without its secret, allow-list updates: `duet-sync`'s
//!   `tests/net_tls.rs`;
//! - garbage frames and a quiet peer in the sans-IO session, and automerge's
//!   known panics on hostile changes: `duet-sync`'s `tests/session.rs` and
//!   `tests/fuzz_corpus.rs`;
//! - an over-limit length refused from the header: `frame.rs`'s unit tests
//!   (without the allocation check below).
//!
//! Every test prints its measured figures on lines starting with `figure:`
//! (`cargo test -p duet --test adversarial -- --nocapture` shows them).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use automerge::{Change, ChangeHash};
use duet::model::{DeviceId, DeviceSecret};
use duet::sync::{FIRST_STREAM_TIMEOUT, MAX_CONNECTIONS_PER_DEVICE};
use duet::sync_once;
use duet_sync::net::driver::{self, DriveError, Replica};
use duet_sync::net::tls::{self, ALPN_SYNC, AllowList, AnyDevice};
use duet_sync::proto::frame::{FrameDecoder, FrameError, MAX_FRAME};
use duet_sync::proto::session::{Event, IDLE_TIMEOUT_MS, Session};
use duet_sync::proto::verify;
use duet_sync::proto::wire::{self, Hello, Message, SyncMessage};

mod common;
use common::*;

/// How long the serve's driver lingers after ending a session, waiting for the
/// peer to take its last bytes (`LINGER` in `duet-sync`'s driver).
const LINGER: Duration = Duration::from_secs(5);

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------
// Homes, pairing, serving (the minimum of `tests/sync.rs`'s helpers)
// ---------------------------------------------------------------------------

fn secret_of(home: &Shared) -> DeviceSecret {
    lock(home).store_mut().device_secret().unwrap()
}

/// Sam's laptop and Alex's phone, paired.
async fn couple(root: &Path) -> (Shared, Shared) {
    let sam = init(root, "Sam", "laptop");
    let alex = init(root, "Alex", "phone");
    pair(&sam, &alex, false).await;
    (sam, alex)
}

// ---------------------------------------------------------------------------
// Speaking the protocol by hand
// ---------------------------------------------------------------------------

/// A QUIC connection to the serve at `addr` as the device `secret`, which
/// expects the server to be `server`.
async fn connect_as(
    secret: &DeviceSecret,
    server: DeviceId,
    addr: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let config = tls::client_config(secret, Arc::new(AllowList::new([server])), ALPN_SYNC).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let connecting = endpoint.connect_with(config, addr, &server_name(addr)).unwrap();
    let conn = within("a member's handshake", connecting).await.unwrap();
    (endpoint, conn)
}

fn frame_bytes(m: &Message) -> Vec<u8> {
    m.encode().unwrap()
}

fn hello(space: &str) -> Vec<u8> {
    frame_bytes(&Message::Hello(Hello {
        min_protocol: wire::MIN_PROTOCOL,
        max_protocol: wire::PROTOCOL,
        space_id: space.into(),
    }))
}

/// An automerge sync message announcing `heads` and carrying `chunks`.
fn sync_message(chunks: Vec<Vec<u8>>, heads: Vec<ChangeHash>) -> Vec<u8> {
    automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: chunks.into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

/// What a serve said on one stream.
struct Heard {
    frames: Vec<Message>,
    /// When a Failure frame arrived, from the start of listening.
    failure_after: Option<Duration>,
    /// How the stream ended: "finished", the connection's error, or
    /// "still open" if `limit` passed first.
    end: String,
    after: Duration,
}

impl Heard {
    fn failure(&self) -> Option<&str> {
        self.frames.iter().find_map(|m| match m {
            Message::Failure(f) => Some(f.text.as_str()),
            _ => None,
        })
    }
}

/// Reads what the serve sends on `recv` until it ends the stream, the
/// connection goes, or `limit` passes.
async fn hear(recv: &mut quinn::RecvStream, limit: Duration) -> Heard {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut failure_after = None;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match tokio::time::timeout_at(deadline, recv.read(&mut buf)).await {
            Err(_) => break "still open".to_string(),
            Ok(Ok(None)) => break "finished".to_string(),
            Ok(Err(e)) => break e.to_string(),
            Ok(Ok(Some(n))) => {
                decoder.push(&buf[..n]);
                while let Some(f) = decoder.next_frame().expect("the serve sends valid frames") {
                    let m = Message::decode(&f).expect("the serve sends valid messages");
                    if matches!(m, Message::Failure(_)) && failure_after.is_none() {
                        failure_after = Some(start.elapsed());
                    }
                    frames.push(m);
                }
            }
        }
    };
    Heard {
        frames,
        failure_after,
        end,
        after: start.elapsed(),
    }
}

/// Sends `bytes` to the serve at `addr` on a new connection as `secret`'s
/// device, leaves the stream open, and returns what the serve answered until
/// it ended the stream.
async fn send_as(secret: &DeviceSecret, server: DeviceId, addr: SocketAddr, bytes: &[u8]) -> Heard {
    let (endpoint, conn) = connect_as(secret, server, addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let heard = hear(&mut recv, STEP).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    heard
}

// ---------------------------------------------------------------------------
// 1. A frame over the maximum
// ---------------------------------------------------------------------------

/// Peak virtual memory of this process, in bytes (Linux).
fn vm_peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPeak:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const ALLOC_PROBE: &str = "DUET_ADVERSARIAL_ALLOC_PROBE";

/// The decoder refuses a 4 GiB length before any buffer grows toward it, and
/// does not reserve an allowed (32 MiB) length either before the bytes come.
///
/// Measured by the process's peak virtual memory, which any allocation of
/// that size raises (even one whose pages are never touched). A counting
/// global allocator would need `unsafe`, which the workspace forbids. The
/// measure runs in a process of its own (this test binary, re-run on this one
/// test), so that nothing else running in parallel moves the peak.
#[cfg(target_os = "linux")]
#[test]
fn a_4_gib_length_prefix_is_refused_before_any_buffer_grows() {
    const NAME: &str = "a_4_gib_length_prefix_is_refused_before_any_buffer_grows";
    if std::env::var_os(ALLOC_PROBE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(ALLOC_PROBE, "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        eprint!("{stderr}");
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the probe process failed:\n{stdout}\n{stderr}"
        );
        return;
    }

    const MIB: u64 = 1 << 20;
    // Over the limit: 4 GiB - 1 announced, a few bytes of it sent.
    let before = vm_peak();
    let mut d = FrameDecoder::new();
    d.push(&u32::MAX.to_be_bytes());
    d.push(&[wire::SYNC, 1, 2, 3, 4, 5, 6, 7]);
    let refused = d.next_frame();
    let grew = vm_peak() - before;
    assert_eq!(refused, Err(FrameError::TooLarge(u32::MAX as usize)));
    assert_eq!(d.buffered(), 12, "only the bytes received are held");
    assert!(grew < 16 * MIB, "the peak grew by {grew} bytes");

    // At the limit: allowed, but nothing is reserved before the bytes come.
    let before = vm_peak();
    let mut d = FrameDecoder::new();
    d.push(&u32::try_from(MAX_FRAME).unwrap().to_be_bytes());
    d.push(&[wire::SYNC, 1, 2, 3]);
    assert_eq!(d.next_frame(), Ok(None), "waits for the rest");
    let grew_allowed = vm_peak() - before;
    assert!(grew_allowed < 16 * MIB, "the peak grew by {grew_allowed} bytes");

    // The measure can fail: a buffer of the announced size shows.
    let before = vm_peak();
    let mut control: Vec<u8> = Vec::new();
    if control.try_reserve_exact(u32::MAX as usize).is_ok() {
        let grew_control = vm_peak() - before;
        assert!(
            grew_control >= 3072 * MIB,
            "the control grew the peak by {grew_control} bytes only"
        );
        eprintln!(
            "figure: decoder fed a 4 GiB length prefix: refused, peak virtual memory +{} KiB \
             (+{} KiB for an allowed 32 MiB prefix; a 4 GiB buffer reserved: +{} MiB)",
            grew / 1024,
            grew_allowed / 1024,
            grew_control / MIB
        );
    } else {
        eprintln!("figure: (this machine would not reserve 4 GiB: the control was skipped)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_from_a_member_is_refused_from_its_header() {
    let root = tempfile::tempdir().unwrap();
    let (sam, alex) = couple(root.path()).await;
    let server = start_serve(&sam).await;
    let (sam_id, alex_secret) = (device_of(&sam), secret_of(&alex));
    let space = lock(&sam).space_id().unwrap();
    let before = (heads(&sam), log(&sam));

    // 4 GiB announced after a valid Hello, and a few bytes of it.
    let mut bytes = hello(&space);
    bytes.extend(u32::MAX.to_be_bytes());
    bytes.push(wire::SYNC);
    bytes.extend([0u8; 1024]);
    let heard = send_as(&alex_secret, sam_id, server.addr, &bytes).await;
    let text = heard
        .failure()
        .expect("the serve says why it refuses")
        .to_string();
    assert!(text.contains("over the 33554432-byte limit"), "{text}");
    assert_eq!(heard.end, "finished", "the serve ends the stream");
    let took = heard.failure_after.unwrap();
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    eprintln!(
        "figure: 4 GiB frame header from a member: refused after {} ms: {text:?}",
        millis(took)
    );

    // One byte over 32 MiB announced, then the bytes actually pushed as fast
    // as QUIC takes them: the serve stops reading at the header.
    let (endpoint, conn) = connect_as(&alex_secret, sam_id, server.addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&hello(&space)).await.unwrap();
    let over = u32::try_from(MAX_FRAME + 1).unwrap();
    send.write_all(&over.to_be_bytes()).await.unwrap();
    let pushing = tokio::spawn(async move {
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0usize;
        while written < MAX_FRAME + (16 << 20) {
            if let Err(e) = send.write_all(&chunk).await {
                return (written, Some(e.to_string()));
            }
            written += chunk.len();
        }
        (written, None)
    });
    let heard = hear(&mut recv, STEP).await;
    let (written, stopped) = within("the pusher to be stopped", pushing).await.unwrap();
    let text = heard
        .failure()
        .expect("the serve says why it refuses")
        .to_string();
    assert!(text.contains("frame of 33554433 bytes is over"), "{text}");
    assert!(heard.failure_after.unwrap() < Duration::from_secs(2));
    assert!(
        stopped.is_some(),
        "the serve took {written} bytes of the frame and more"
    );
    assert!(written < MAX_FRAME, "the serve let {written} bytes in");
    eprintln!(
        "figure: 32 MiB + 1 frame pushed by a member: refused after {} ms; the pusher got {} MiB \
         into QUIC's buffers before its stream was stopped ({})",
        millis(heard.failure_after.unwrap()),
        written >> 20,
        stopped.unwrap()
    );
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;

    // Nothing was stored, and the serve goes on serving.
    server.assert_alive(&sam);
    assert_eq!((heads(&sam), log(&sam)), before);
    add_issue(&alex, "after the oversized frames", "");
    sync(&alex, server.addr).await.unwrap();
    assert!(has_title(&sam, "after the oversized frames"));
    assert_eq!(heads(&sam), heads(&alex));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 2. Peers that connect and stall
// ---------------------------------------------------------------------------

/// Sam's laptop, Alex's phone and Sam's tablet, all paired.
async fn three_devices(root: &Path) -> (Shared, Shared, Shared) {
    let (sam, alex) = couple(root).await;
    let tablet = init(root, "Sam", "tablet");
    pair(&sam, &tablet, true).await;
    (sam, alex, tablet)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Completes the handshake and opens no stream.
    NoStream,
    /// Opens a stream and sends nothing on it (QUIC tells the other side of a
    /// stream only with its first byte, so to the serve this is `NoStream`).
    SilentStream,
    /// Says Hello, then nothing.
    HelloThenSilence,
    /// Sends one byte every 300 ms of a frame announced as 1 MiB, from the
    /// start: a frame that never completes.
    Trickle,
    /// Says Hello, then trickles a 1 MiB Sync frame.
    HelloThenTrickle,
    /// Not a staller, a slow link: says Hello, then sends a Sync frame of
    /// junk slowly but steadily, taking longer than the idle timeout. The serve
    /// must read it to its end (and then refuse the junk), not time it out.
    SlowFrame,
}

/// How long a `SlowFrame` takes to send: 72 pieces of 64 KiB, one every 500 ms.
const SLOW_PIECES: usize = 72;
const SLOW_EVERY: Duration = Duration::from_millis(500);

impl Stall {
    /// The longest the serve may hold this staller's connection: the timer
    /// that cuts it, plus the driver's linger, plus slack for a loaded machine.
    fn bound(self) -> Duration {
        let slack = Duration::from_secs(4);
        match self {
            Stall::NoStream | Stall::SilentStream => FIRST_STREAM_TIMEOUT + slack,
            Stall::SlowFrame => SLOW_EVERY * SLOW_PIECES as u32 + slack,
            _ => Duration::from_millis(IDLE_TIMEOUT_MS) + LINGER + slack,
        }
    }

    /// The shortest: the timer itself (minus a tick).
    fn floor(self) -> Duration {
        match self {
            Stall::NoStream | Stall::SilentStream => FIRST_STREAM_TIMEOUT - Duration::from_millis(500),
            Stall::SlowFrame => SLOW_EVERY * (SLOW_PIECES - 1) as u32,
            _ => Duration::from_millis(IDLE_TIMEOUT_MS) - Duration::from_millis(500),
        }
    }
}

/// Connects as `secret`'s device and stalls as `how` says, until the serve
/// closes the connection (or `give_up` passes). Returns how long the serve
/// kept it, from the end of the handshake, how many bytes were sent after
/// Hello, and the serve's Failure text if it sent one.
async fn stall(
    secret: DeviceSecret,
    server: DeviceId,
    addr: SocketAddr,
    space: String,
    how: Stall,
    give_up: Duration,
) -> (Stall, Option<Duration>, usize, Option<String>) {
    let (endpoint, conn) = connect_as(&secret, server, addr).await;
    let start = Instant::now();
    let streams = match how {
        Stall::NoStream => None,
        _ => Some(conn.open_bi().await.unwrap()),
    };
    let trickled = AtomicUsize::new(0);
    let misbehave = async {
        let Some((mut send, mut recv)) = streams else {
            return std::future::pending::<Option<String>>().await;
        };
        let mut pending = Vec::new();
        if matches!(
            how,
            Stall::HelloThenSilence | Stall::HelloThenTrickle | Stall::SlowFrame
        ) {
            send.write_all(&hello(&space)).await.unwrap();
        }
        if how == Stall::SlowFrame {
            let piece = 64 * 1024;
            let len = u32::try_from(piece * SLOW_PIECES - 4).unwrap();
            let mut frame = len.to_be_bytes().to_vec();
            frame.push(wire::SYNC);
            frame.resize(piece * SLOW_PIECES, 0);
            for chunk in frame.chunks(piece) {
                tokio::time::sleep(SLOW_EVERY).await;
                send.write_all(chunk).await.unwrap();
                trickled.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            return hear(&mut recv, STEP).await.failure().map(str::to_string);
        }
        if matches!(how, Stall::Trickle | Stall::HelloThenTrickle) {
            pending.extend((1u32 << 20).to_be_bytes());
            pending.push(wire::SYNC);
            pending.resize(1 << 20, 0);
        }
        for byte in pending {
            if send.write_all(&[byte]).await.is_err() {
                break;
            }
            trickled.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Keep the stream (and its receiving half, unread) open.
        let _keep = (send, recv);
        std::future::pending::<Option<String>>().await
    };
    let (held, failure) = tokio::select! {
        biased;
        failure = misbehave => (Some(start.elapsed()), failure),
        _ = conn.closed() => (Some(start.elapsed()), None),
        _ = tokio::time::sleep(give_up) => (None, None),
    };
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    (how, held, trickled.load(Ordering::SeqCst), failure)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalling_members_are_cut_off_and_the_partner_is_served_meanwhile() {
    let root = tempfile::tempdir().unwrap();
    let (sam, alex, tablet) = three_devices(root.path()).await;
    let server = start_serve(&sam).await;
    let sam_id = device_of(&sam);
    let space = lock(&sam).space_id().unwrap();
    // Members' keys pass TLS. The tablet stalls on as many connections as
    // serve admits from one device (MAX_CONNECTIONS_PER_DEVICE), one of them
    // a slow but honest-looking link; the partner's own device stalls on two
    // more while it syncs normally on a third.
    let kinds = [
        (&tablet, Stall::NoStream),
        (&tablet, Stall::SilentStream),
        (&tablet, Stall::HelloThenSilence),
        (&tablet, Stall::SlowFrame),
        (&alex, Stall::Trickle),
        (&alex, Stall::HelloThenTrickle),
    ];
    assert_eq!(MAX_CONNECTIONS_PER_DEVICE, 4, "the tablet's four fill its share");
    let give_up = Duration::from_millis(IDLE_TIMEOUT_MS) + LINGER + Duration::from_secs(8);
    let started = Instant::now();
    let stallers: Vec<_> = kinds
        .iter()
        .map(|&(who, how)| {
            tokio::spawn(stall(
                secret_of(who),
                sam_id,
                server.addr,
                space.clone(),
                how,
                give_up,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Let them all get in and settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The partner syncs while the stallers hang around, twice: once among all
    // ten, once after the first cut-offs.
    let mut syncs = Vec::new();
    for (i, at) in [
        Duration::from_secs(1),
        FIRST_STREAM_TIMEOUT + Duration::from_secs(2),
    ]
    .into_iter()
    .enumerate()
    {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let title = format!("while stallers hang around {i}");
        add_issue(&alex, &title, "");
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), sync_once(alex.clone(), server.addr)).await;
        let took = t.elapsed();
        assert!(matches!(r, Ok(Ok(_))), "the partner's sync {i} failed: {r:?}");
        assert!(has_title(&sam, &title));
        syncs.push(took);
    }
    server.assert_alive(&sam);

    let mut held = Vec::new();
    for s in stallers {
        let limit = give_up + Duration::from_secs(10);
        held.push(
            tokio::time::timeout(limit, s)
                .await
                .expect("a staller hung")
                .unwrap(),
        );
    }
    let mut report = Vec::new();
    for (how, kept, trickled, failure) in &held {
        let kept = kept.unwrap_or_else(|| panic!("{how:?} was never cut off (gave up after {give_up:?})"));
        report.push(format!("{how:?} {} ms ({trickled} B sent)", millis(kept)));
        if *how == Stall::SlowFrame {
            // Read to its end, then judged: not timed out (a timeout sends no
            // Failure).
            let text = failure.as_deref().unwrap_or_default();
            assert!(text.contains("malformed sync message"), "{text:?}");
        }
        assert!(
            kept <= how.bound(),
            "{how:?} was held {kept:?}, over {:?}",
            how.bound()
        );
        assert!(
            kept >= how.floor(),
            "{how:?} was cut after {kept:?}, before its timer"
        );
    }
    eprintln!(
        "figure: stallers cut off after: {}; the partner's syncs meanwhile took {} ms and {} ms",
        report.join(", "),
        millis(syncs[0]),
        millis(syncs[1])
    );

    // Still serving.
    add_issue(&alex, "after the stallers", "");
    sync(&alex, server.addr).await.unwrap();
    assert!(has_title(&sam, "after the stallers"));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 3. A burst of handshakes from strangers
// ---------------------------------------------------------------------------

fn random_secret() -> DeviceSecret {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    DeviceSecret::from_bytes(&bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The serve refused the key in the TLS handshake.
    Refused,
    /// The connection stayed open: let in.
    Admitted,
    /// Anything else (no answer, another error).
    Other(String),
}

/// One handshake from a stranger's fresh random key, with a client that would
/// accept any server: only the serve's check can stop it.
async fn stranger_knocks(endpoint: &quinn::Endpoint, addr: SocketAddr) -> (Verdict, Duration) {
    let config = tls::client_config(&random_secret(), Arc::new(AnyDevice), ALPN_SYNC).unwrap();
    let start = Instant::now();
    let connecting = endpoint.connect_with(config, addr, tls::SERVER_NAME).unwrap();
    let classify = |e: &quinn::ConnectionError| match driver::connection_error(e) {
        DriveError::Refused => Verdict::Refused,
        other => Verdict::Other(other.to_string()),
    };
    let verdict = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => Verdict::Other("no answer in 10 s".into()),
        Ok(Err(e)) => classify(&e),
        // TLS 1.3 lets the client finish before the server has judged its
        // key: the refusal then closes the connection right after.
        Ok(Ok(conn)) => match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
            Ok(e) => classify(&e),
            Err(_) => {
                conn.close(0u32.into(), b"done");
                Verdict::Admitted
            }
        },
    };
    (verdict, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_strangers_is_refused_and_the_partner_still_syncs() {
    const KNOCKS: usize = 1000;
    const AT_ONCE: usize = 64;
    let root = tempfile::tempdir().unwrap();
    let (sam, alex) = couple(root.path()).await;
    let server = start_serve(&sam).await;
    let addr = server.addr;

    // The partner keeps syncing, one edit each time, while the burst runs.
    let burst_over = Arc::new(AtomicBool::new(false));
    let partner_synced = Arc::new(AtomicUsize::new(0));
    let partner = {
        let (alex, over, synced) = (alex.clone(), burst_over.clone(), partner_synced.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            let mut i = 0;
            while !over.load(Ordering::SeqCst) {
                let title = format!("during the burst {i}");
                add_issue(&alex, &title, "");
                let t = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(15), sync_once(alex.clone(), addr)).await;
                let ended_during = !over.load(Ordering::SeqCst);
                synced.fetch_add(1, Ordering::SeqCst);
                done.push((
                    title,
                    r.map_err(|_| "timed out".to_string()),
                    t.elapsed(),
                    ended_during,
                ));
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done
        })
    };

    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let start = Instant::now();
    let mut knocks = tokio::task::JoinSet::new();
    let mut verdicts = Vec::new();
    // At least KNOCKS, and on until a sync of the partner has ended during
    // the burst (strangers are refused at their ClientHello, so a thousand
    // can take less than one sync).
    let mut knocked = 0;
    while knocked < KNOCKS || partner_synced.load(Ordering::SeqCst) == 0 {
        assert!(knocked < 50 * KNOCKS, "the partner never finished a sync");
        let (endpoint, gate) = (endpoint.clone(), gate.clone());
        let permit = gate.acquire_owned().await.unwrap();
        knocks.spawn(async move {
            let _permit = permit;
            stranger_knocks(&endpoint, addr).await
        });
        knocked += 1;
        while let Some(v) = knocks.try_join_next() {
            verdicts.push(v.unwrap());
        }
    }
    while let Some(v) = within("the burst", knocks.join_next()).await {
        verdicts.push(v.unwrap());
    }
    let knocks = verdicts.len();
    let burst = start.elapsed();
    burst_over.store(true, Ordering::SeqCst);
    let partner_syncs = within("the partner's syncs", partner).await.unwrap();

    let refused = verdicts.iter().filter(|(v, _)| *v == Verdict::Refused).count();
    let others: Vec<&Verdict> = verdicts
        .iter()
        .map(|(v, _)| v)
        .filter(|v| **v != Verdict::Refused)
        .collect();
    let mut latencies: Vec<Duration> = verdicts.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    assert_eq!(refused, knocks, "not refused: {others:?}");
    server.assert_alive(&sam);

    // Every sync of the partner during the burst worked, at least one began
    // and ended within it, and everything arrived.
    for (title, r, took, _) in &partner_syncs {
        assert!(matches!(r, Ok(Ok(_))), "{title} ({took:?}): {r:?}");
        assert!(has_title(&sam, title), "{title}");
    }
    let during: Vec<Duration> = partner_syncs.iter().filter(|s| s.3).map(|s| s.2).collect();
    assert!(
        !during.is_empty(),
        "no sync of the partner ended during the {burst:?} burst"
    );
    add_issue(&alex, "after the burst", "");
    let t = Instant::now();
    sync(&alex, addr).await.unwrap();
    let after = t.elapsed();
    assert!(has_title(&sam, "after the burst"));
    assert_eq!(heads(&sam), heads(&alex));
    eprintln!(
        "figure: {knocks} stranger handshakes ({AT_ONCE} at a time) against serve: {} ms in all \
         ({:.0}/s), all refused with access_denied; per handshake p50 {} ms, p99 {} ms, max {} ms; \
         the partner's {} syncs ending during the burst took {:?} ms; after it {} ms",
        millis(burst),
        knocks as f64 / burst.as_secs_f64(),
        millis(latencies[knocks / 2]),
        millis(latencies[knocks * 99 / 100]),
        millis(latencies[knocks - 1]),
        during.len(),
        during.iter().map(|d| millis(*d)).collect::<Vec<_>>(),
        millis(after)
    );
    endpoint.wait_idle().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Malformed change bytes in a well-formed, signed Sync frame
// ---------------------------------------------------------------------------

/// A known automerge crash input (`fuzz/known-crashes/`, or
/// `fuzz/regressions/` once automerge no longer crashes on it).
fn fuzz_input(target: &str, name: &str) -> Vec<u8> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for dir in ["known-crashes", "regressions"] {
        if let Ok(bytes) = std::fs::read(fuzz.join(dir).join(target).join(name)) {
            return bytes;
        }
    }
    panic!("fuzz input {target}/{name} is in neither fuzz/known-crashes nor fuzz/regressions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_changes_under_valid_signatures_are_refused_and_the_serve_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let (sam, alex) = couple(root.path()).await;
    let server = start_serve(&sam).await;
    let (sam_id, alex_id, alex_secret) = (device_of(&sam), device_of(&alex), secret_of(&alex));
    let space = lock(&sam).space_id().unwrap();
    sync(&alex, server.addr).await.unwrap();

    // Alex's real next change, properly signed: the raw material.
    let base = heads(&alex);
    add_issue(&alex, "ONLY-HONESTLY", "");
    let real: Change = {
        let mut changes = lock(&alex).read(|d| d.get_changes(&base)).unwrap();
        assert_eq!(changes.len(), 1);
        changes.pop().unwrap()
    };
    let real_bytes = real.raw_bytes().to_vec();
    let alex_atts = lock(&alex).store_mut().attestations().unwrap();
    let before = (heads(&sam), log(&sam));

    let reencoded = |edit: &dyn Fn(&mut automerge::ExpandedChange)| -> Change {
        let mut e = real.decode();
        edit(&mut e);
        e.hash = None;
        e.into()
    };
    let seq_gap = reencoded(&|e| e.seq += 3);
    let missing_object = reencoded(&|e| {
        for op in &mut e.operations {
            op.obj = automerge::legacy::ObjectId::Id(automerge::legacy::OpId::new(999, &sam_id.actor()));
        }
    });
    let mut flipped = real_bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    // A whole-document chunk (what a first sync sends) skips `parse_chunks`:
    // automerge's own loading must refuse it.
    let mut damaged_document = lock(&alex).read(|d| d.save()).unwrap();
    let mid = damaged_document.len() / 2;
    damaged_document[mid] ^= 0x55;
    let mut random = vec![0u8; 200];
    getrandom::fill(&mut random).unwrap();

    // (what, automerge message bytes, hash to sign)
    let cases: Vec<(&str, Vec<u8>, ChangeHash)> = vec![
        ("not an automerge sync message", random.clone(), real.hash()),
        (
            "a chunk of random bytes",
            sync_message(vec![random], vec![real.hash()]),
            real.hash(),
        ),
        (
            "the change with one byte flipped",
            sync_message(vec![flipped], vec![real.hash()]),
            real.hash(),
        ),
        (
            "the change cut short",
            sync_message(
                vec![real_bytes[..real_bytes.len() - 7].to_vec()],
                vec![real.hash()],
            ),
            real.hash(),
        ),
        (
            "the change re-encoded with a gap in its seq (an automerge panic)",
            sync_message(vec![seq_gap.raw_bytes().to_vec()], vec![seq_gap.hash()]),
            seq_gap.hash(),
        ),
        (
            "the change aimed at an object that does not exist (an automerge panic)",
            sync_message(
                vec![missing_object.raw_bytes().to_vec()],
                vec![missing_object.hash()],
            ),
            missing_object.hash(),
        ),
        (
            "op ids that do not fit (an automerge panic in decoding)",
            sync_message(
                vec![fuzz_input("parse_chunks", "fuzzed-change-from-bytes-obj-id")],
                vec![real.hash()],
            ),
            real.hash(),
        ),
        (
            "Alex's whole document with one byte flipped",
            sync_message(vec![damaged_document], vec![real.hash()]),
            real.hash(),
        ),
    ];

    for (what, message, signed) in cases {
        // Signed, and correctly: Alex's own key over the hash it announces.
        let mut attestations = alex_atts.clone();
        attestations.push(alex_secret.attest(&signed));
        let mut bytes = hello(&space);
        bytes.extend(frame_bytes(&Message::Sync(SyncMessage {
            message,
            attestations,
        })));
        let heard = send_as(&alex_secret, sam_id, server.addr, &bytes).await;
        let text = heard
            .failure()
            .unwrap_or_else(|| panic!("{what}: no refusal, the serve said {:?}", heard.frames))
            .to_string();
        assert!(
            text.contains("nothing from them was applied") || text.contains("sync message does not apply"),
            "{what}: {text}"
        );
        assert_eq!(heard.end, "finished", "{what}: the serve ends the stream");
        eprintln!(
            "figure: {what}: refused after {} ms: {text:?}",
            millis(heard.failure_after.unwrap())
        );
        server.assert_alive(&sam);
        assert_eq!((heads(&sam), log(&sam)), before, "{what}: nothing applied");
        assert!(!has_title(&sam, "ONLY-HONESTLY"), "{what}");
    }
    assert_eq!(assert_consistent(&dir_of(&sam)), before.0);

    // The next honest sync brings the real change, and only once.
    sync(&alex, server.addr).await.unwrap();
    assert!(has_title(&sam, "ONLY-HONESTLY"));
    assert_eq!(heads(&sam), heads(&alex));
    assert_eq!(log(&sam).len(), before.1.len() + 1);
    let by_alex = |h: &Shared| {
        lock(h)
            .read(|d| {
                d.get_changes(&[])
                    .iter()
                    .filter(|c| alex_id.is_actor(c.actor_id()))
                    .count()
            })
            .unwrap()
    };
    assert_eq!(by_alex(&sam), by_alex(&alex));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 5. Old messages replayed
// ---------------------------------------------------------------------------

/// Syncs `home` once with the serve at `addr`, as its own device, driving the
/// sans-IO session by hand instead of through the driver, and returns every
/// byte this side sent, in order: the session, recorded for a replay.
async fn recorded_sync(home: &Shared, server: DeviceId, addr: SocketAddr) -> Vec<u8> {
    let (endpoint, conn) = connect_as(&secret_of(home), server, addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut session = {
        let mut h = lock(home);
        let space = h.space_id().unwrap();
        let saved = h.store_mut().sync_state(&server).unwrap();
        let founder = h.founder().unwrap();
        Session::new(server, &space, founder, saved.as_deref(), 0)
    };
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    'session: loop {
        while let Some(bytes) = session.poll_transmit() {
            send.write_all(&bytes).await.unwrap();
            sent.extend(bytes);
        }
        if session.is_closed() {
            break;
        }
        if Replica::is_synced(&mut *lock(home), &session).unwrap() {
            session.close();
            continue;
        }
        let n = within("the serve's answer", recv.read(&mut buf))
            .await
            .unwrap()
            .expect("the serve ended the stream before the sync was done");
        decoder.push(&buf[..n]);
        let mut h = lock(home);
        let now = u64::try_from(start.elapsed().as_millis()).unwrap();
        while let Some(f) = decoder.next_frame().unwrap() {
            let events = Replica::receive(&mut *h, &mut session, &f, now).unwrap();
            if events.contains(&Event::PeerDone) {
                break 'session;
            }
        }
        Replica::generate(&mut *h, &mut session).unwrap();
    }
    Replica::save_state(&mut *lock(home), &session).unwrap();
    send.finish().unwrap();
    let heard = hear(&mut recv, STEP).await;
    assert!(heard.failure().is_none(), "{:?}", heard.frames);
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    sent
}

/// Every issue appears once, and the homes hold the same record.
fn assert_no_duplicates(home: &Shared) {
    let t = titles(home);
    let mut unique = t.clone();
    unique.dedup();
    assert_eq!(t, unique, "an issue is there twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_session_does_no_harm() {
    let root = tempfile::tempdir().unwrap();
    let (sam, alex) = couple(root.path()).await;
    let server = start_serve(&sam).await;
    let (sam_id, alex_secret) = (device_of(&sam), secret_of(&alex));

    // An honest session, recorded: it carries three new issues.
    for i in 0..3 {
        add_issue(&alex, &format!("recorded {i}"), "");
    }
    let recorded = recorded_sync(&alex, sam_id, server.addr).await;
    let (frames, changes) = {
        let mut d = FrameDecoder::new();
        d.push(&recorded);
        let frames: Vec<Message> = std::iter::from_fn(|| d.next_frame().unwrap())
            .map(|f| Message::decode(&f).unwrap())
            .collect();
        let mut changes = 0;
        for m in &frames {
            if let Message::Sync(s) = m {
                let inner = automerge::sync::Message::decode(&s.message).unwrap();
                for chunk in inner.changes.iter() {
                    changes += verify::parse_chunks(chunk).unwrap().len();
                }
            }
        }
        (frames.len(), changes)
    };
    // What is replayed re-delivers changes (the three issues and whatever
    // else Sam lacked), not just a handshake.
    assert!(changes >= 3, "the recorded session carried {changes} changes");
    assert!(has_title(&sam, "recorded 2"));
    assert_eq!(heads(&sam), heads(&alex));
    let synced = (heads(&sam), log(&sam), titles(&sam));

    // Replayed verbatim on a new connection, right away: accepted as the
    // nothing-new it is.
    let replay = async |when: &str| {
        let heard = send_as(&alex_secret, sam_id, server.addr, &recorded).await;
        assert!(heard.failure().is_none(), "{when}: {:?}", heard.frames);
        assert_eq!(heard.end, "finished", "{when}");
        server.assert_alive(&sam);
        assert_no_duplicates(&sam);
        eprintln!(
            "figure: replay {when} ({frames} frames, {changes} changes, {} bytes): the serve \
             answered {} frames without a Failure and ended the stream after {} ms",
            recorded.len(),
            heard.frames.len(),
            millis(heard.after)
        );
    };
    replay("right after the session").await;
    assert_eq!((heads(&sam), log(&sam), titles(&sam)), synced, "nothing changed");

    // Both move on; then the old session again, now stale.
    add_issue(&sam, "Sam later", "");
    add_issue(&alex, "Alex later", "");
    sync(&alex, server.addr).await.unwrap();
    let moved_on = (heads(&sam), log(&sam), titles(&sam));
    replay("after both moved on").await;
    assert_eq!(
        (heads(&sam), log(&sam), titles(&sam)),
        moved_on,
        "nothing changed"
    );

    // Later syncs work, both ways, and converge on one copy of everything.
    add_issue(&alex, "after the replays", "");
    sync(&alex, server.addr).await.unwrap();
    add_issue(&sam, "Sam after the replays", "");
    let alex_server = start_serve(&alex).await;
    sync(&sam, alex_server.addr).await.unwrap();
    alex_server.stop().await;
    assert_eq!(heads(&sam), heads(&alex));
    assert_eq!(titles(&sam), titles(&alex));
    assert_no_duplicates(&sam);
    assert_eq!(titles(&sam).len(), 7);
    server.stop().await;
    assert_eq!(
        assert_consistent(&dir_of(&sam)),
        assert_consistent(&dir_of(&alex))
    );
}

// ---------------------------------------------------------------------------
// 6. A revoked device that keeps trying
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_retrying_is_refused_in_tls_every_time() {
    const TRIES: usize = 20;
    let root = tempfile::tempdir().unwrap();
    let (sam, alex, tablet) = three_devices(root.path()).await;
    let server = start_serve(&sam).await;
    let (sam_id, lost) = (device_of(&sam), device_of(&tablet));
    add_issue(&tablet, "written before the loss", "");
    sync(&tablet, server.addr).await.unwrap();
    sync(&alex, server.addr).await.unwrap();
    let tablet_changes = |h: &Shared| {
        lock(h)
            .read(|d| {
                d.get_changes(&[])
                    .iter()
                    .filter(|c| lost.is_actor(c.actor_id()))
                    .count()
            })
            .unwrap()
    };
    let kept = tablet_changes(&sam);

    // Sam revokes the tablet through the home the running serve uses.
    lock(&sam).revoke_device(&lost.to_string()[..8]).unwrap();
    sync(&alex, server.addr).await.unwrap();
    // The thief keeps writing, and keeps trying: its own serve dials Sam's
    // (reconnecting with backoff), and it syncs by hand again and again.
    add_issue(&tablet, "WRITTEN-BY-A-THIEF", "");
    let thief_serve = start_serve_dialling(&tablet, vec![server.addr]).await;

    // One endpoint and one TLS configuration across every attempt, so a
    // resumed TLS session (which would skip the key check) would show here.
    let config =
        tls::client_config(&secret_of(&tablet), Arc::new(AllowList::new([sam_id])), ALPN_SYNC).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    // The serve's allow list follows the revocation within a poll or two.
    let probe = async |endpoint: &quinn::Endpoint| {
        let connecting = endpoint
            .connect_with(config.clone(), server.addr, &server_name(server.addr))
            .unwrap();
        match within("a handshake", connecting).await {
            Err(e) => driver::connection_error(&e),
            Ok(conn) => match tokio::time::timeout(Duration::from_secs(2), conn.closed()).await {
                Ok(e) => driver::connection_error(&e),
                Err(_) => {
                    conn.close(0u32.into(), b"probe");
                    DriveError::Connection("let in".into())
                }
            },
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(probe(&endpoint).await, DriveError::Refused) {
        assert!(
            Instant::now() < deadline,
            "the serve still lets the revoked tablet in"
        );
    }

    let mut times = Vec::new();
    for i in 0..TRIES {
        let t = Instant::now();
        let verdict = probe(&endpoint).await;
        assert!(matches!(verdict, DriveError::Refused), "try {i}: {verdict:?}");
        let err = sync(&tablet, server.addr).await.unwrap_err().to_string();
        assert!(err.contains("refused this one"), "try {i}: {err}");
        times.push(t.elapsed());
    }
    // The partner is unaffected.
    add_issue(&alex, "while the thief knocks", "");
    sync(&alex, server.addr).await.unwrap();
    thief_serve.stop().await;
    server.assert_alive(&sam);

    for home in [&sam, &alex] {
        assert!(!has_title(home, "WRITTEN-BY-A-THIEF"));
        assert!(has_title(home, "written before the loss"), "its past edits stay");
        assert_eq!(tablet_changes(home), kept, "no change of the tablet's entered");
    }
    assert!(has_title(&sam, "while the thief knocks"));
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len()).unwrap();
    eprintln!(
        "figure: revoked tablet, {TRIES} rounds of (a TLS probe + a sync_once) on one endpoint, \
         plus its own serve dialling with backoff: all refused in TLS; {} ms per round on average",
        millis(mean)
    );
    endpoint.wait_idle().await;
    server.stop().await;
}

/// A device over its share of connections replaces its oldest one rather than
/// being shut out: a device that restarts cannot close the connections its
/// previous run left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_share_replaces_its_oldest_connection() {
    let root = tempfile::tempdir().unwrap();
    let (sam, _alex, tablet) = three_devices(root.path()).await;
    let server = start_serve(&sam).await;
    let sam_id = device_of(&sam);
    let space = lock(&sam).space_id().unwrap();
    let give_up = FIRST_STREAM_TIMEOUT + Duration::from_secs(10);
    // Four leftovers, opened one after the other so that their age is known.
    let mut left = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_DEVICE {
        left.push(tokio::spawn(stall(
            secret_of(&tablet),
            sam_id,
            server.addr,
            space.clone(),
            Stall::NoStream,
            give_up,
        )));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let started = Instant::now();
    add_issue(&tablet, "from the restarted tablet", "");
    sync(&tablet, server.addr).await.unwrap();
    assert!(has_title(&sam, "from the restarted tablet"));
    let synced = started.elapsed();
    let mut ends = Vec::new();
    for l in left {
        let (_, held, _, _) = l.await.unwrap();
        ends.push(held.expect("a leftover connection was never closed"));
    }
    // The oldest was pushed out by the new connection, long before its timer;
    // the others ran to the first-stream timeout.
    assert!(ends[0] < Duration::from_secs(4), "{ends:?}");
    for e in &ends[1..] {
        assert!(
            *e >= FIRST_STREAM_TIMEOUT - Duration::from_millis(500),
            "{ends:?}"
        );
    }
    eprintln!(
        "figure: with four connections left open, the device's new sync took {} ms; the oldest leftover closed after {} ms",
        millis(synced),
        millis(ends[0])
    );
    server.stop().await;
}

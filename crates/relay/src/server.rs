//! The relay's QUIC server.
//!
//! Any device may connect (TLS accepts every well-formed device key, and the
//! handshake proves the device holds it); each request is then judged by the
//! [`Relay`]'s rules against that key. One request per bidirectional stream.
//!
//! Bounds, so that no one can make the relay hold much for long:
//! - a connection attempt must first prove its address (a QUIC retry, one
//!   round trip), so that a forged address cannot spend another's share;
//! - then, before its handshake, the [`Gate`] counts it against its address:
//!   [`GateLimits::connections_per_address`] open at once and a handshake
//!   rate per address; fresh device keys cost nothing to make, so only the
//!   address can bound them. A refused attempt is closed with QUIC's
//!   `CONNECTION_REFUSED`, which the [`RelayClient`](crate::RelayClient)
//!   turns into a sentence;
//! - at most [`MAX_CONNECTIONS`] connections, [`MAX_CONNECTIONS_PER_DEVICE`]
//!   per device (a new one replaces the device's oldest), and
//!   [`MAX_STREAMS_PER_CONNECTION`] open streams per connection;
//! - at most [`MAX_REQUESTS_PER_DEVICE`] requests of one device handled at
//!   once, over all its connections;
//! - a frame's length is checked from its header; a request other than a
//!   post must be small, and a post is refused from its first bytes (before
//!   its bundle is read) when the device is not in the space's list or the
//!   bundle would go over the quota;
//! - a frame must start within 30 s and then average 64 KiB/s; a connection
//!   with no request for [`IDLE_CONNECTION`] is closed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use duet_model::{DeviceId, DeviceSecret};
use duet_sync::net::tls::{self, ALPN_RELAY, AnyDevice};
use duet_sync::proto::relay::{MAX_CONTROL_FRAME, POST, Request, Response, SpaceTag};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::error::RelayError;
use crate::gate::{Gate, GateLimits};
use crate::io::{self, READ_TIMEOUT, ReadFail};
use crate::service::{self, Caller, Limits, Relay};
use crate::store::{MemoryRelayStore, RelayStore, Source, SqliteRelayStore, private_dir};

/// Connections the relay holds at once, from all devices.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections one device may hold at once; a new one closes its oldest.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 4;
/// Streams (requests) open at once on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Requests of one device handled at once, over all its connections.
pub const MAX_REQUESTS_PER_DEVICE: usize = 16;
/// Bytes of posted bundles held in memory at once, over all devices: a post
/// waits (up to 30 s) for room before its bundle is read.
pub const MAX_BUFFERED_POSTS: usize = 256 * 1024 * 1024;
/// The unit of [`MAX_BUFFERED_POSTS`]'s accounting.
const BUDGET_UNIT: usize = 1024 * 1024;
/// A connection with no request open or started for this long is closed.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(60);
/// How often delivered and old bundles of every space are deleted.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
/// The relay's key file in its data folder.
pub const KEY_FILE: &str = "relay.key";

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Where to listen (UDP).
    pub listen: SocketAddr,
    /// The data folder (made owner-only if missing), or `None` to keep
    /// everything in memory, lost when the relay stops.
    pub data: Option<PathBuf>,
    /// Bytes of bundles a space may keep ([`service::DEFAULT_QUOTA`]).
    pub quota_bytes: u64,
    /// How long a bundle is kept, delivered or not ([`service::DEFAULT_RETENTION`]).
    pub retention: Duration,
    /// Bytes of bundles and access lists kept over all spaces
    /// ([`service::DEFAULT_MAX_STORAGE`]).
    pub max_storage_bytes: u64,
    /// Spaces one device may register ([`service::DEFAULT_SPACES_PER_DEVICE`]).
    pub max_spaces_per_device: u64,
    /// Spaces that may be registered from one address
    /// ([`service::DEFAULT_SPACES_PER_ADDRESS`]).
    pub max_spaces_per_address: u64,
    /// Connections and handshakes per address ([`GateLimits::default`]).
    pub gate: GateLimits,
}

impl RelayOptions {
    /// Options with the default limits, in memory.
    pub fn new(listen: SocketAddr) -> RelayOptions {
        let limits = Limits::default();
        RelayOptions {
            listen,
            data: None,
            quota_bytes: limits.quota_bytes,
            retention: limits.retention,
            max_storage_bytes: limits.max_storage_bytes,
            max_spaces_per_device: limits.max_spaces_per_device,
            max_spaces_per_address: limits.max_spaces_per_address,
            gate: GateLimits::default(),
        }
    }
}

/// Runs a relay until `stop` turns true. `ready` receives the bound address
/// once it listens.
pub async fn run(
    opts: RelayOptions,
    stop: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), RelayError> {
    let limits = Limits {
        quota_bytes: opts.quota_bytes,
        retention: opts.retention,
        max_storage_bytes: opts.max_storage_bytes,
        max_spaces_per_device: opts.max_spaces_per_device,
        max_spaces_per_address: opts.max_spaces_per_address,
    };
    match &opts.data {
        Some(dir) => {
            private_dir(dir)?;
            let secret = relay_key(dir)?;
            let store = SqliteRelayStore::open(dir)?;
            tracing::info!(data = %dir.display(), "relay data folder");
            serve(Arc::new(Relay::new(store, limits)), &secret, &opts, stop, ready).await
        }
        None => {
            let secret = fresh_key()?;
            tracing::info!("relay data in memory: lost when the relay stops");
            let store = MemoryRelayStore::new();
            serve(Arc::new(Relay::new(store, limits)), &secret, &opts, stop, ready).await
        }
    }
}

fn fresh_key() -> Result<DeviceSecret, RelayError> {
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *b).map_err(|e| RelayError::Random(e.to_string()))?;
    Ok(DeviceSecret::from_bytes(&b))
}

/// The relay's key, kept in `dir` (made on first start, owner-only).
fn relay_key(dir: &Path) -> Result<DeviceSecret, RelayError> {
    use std::io::{Read, Write};
    let path = dir.join(KEY_FILE);
    let io = |source| RelayError::Io {
        path: path.clone(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            let secret = fresh_key()?;
            f.write_all(&*secret.to_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(key = %secret.device_id(), "made the relay's key");
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(33));
            std::fs::File::open(&path)
                .and_then(|f| f.take(33).read_to_end(&mut bytes))
                .map_err(io)?;
            DeviceSecret::from_slice(&bytes).ok_or_else(|| RelayError::BadKeyFile {
                path: path.clone(),
                detail: format!("{} bytes, not 32", bytes.len()),
            })
        }
        Err(e) => Err(io(e)),
    }
}

/// The transport settings of the relay's connections: the sync transport's
/// (timeouts, no path MTU probes), and bounded streams.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = tls::transport();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS_PER_CONNECTION))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

async fn serve<S: RelayStore + 'static>(
    relay: Arc<Relay<S>>,
    secret: &DeviceSecret,
    opts: &RelayOptions,
    stop: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), RelayError> {
    let mut config = tls::server_config(secret, Arc::new(AnyDevice), &[ALPN_RELAY])?;
    config.transport_config(transport());
    let endpoint = quinn::Endpoint::server(config, opts.listen)
        .map_err(|e| RelayError::Net(format!("cannot listen on {}: {e}", opts.listen)))?;
    let local = endpoint
        .local_addr()
        .map_err(|e| RelayError::Net(e.to_string()))?;
    tracing::info!(%local, key = %secret.device_id(), "relay listening");
    if let Some(r) = ready {
        let _ = r.send(local);
    }

    let mut tasks = JoinSet::new();
    {
        let (relay, mut stop) = (relay.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                let r = relay.clone();
                match tokio::task::spawn_blocking(move || r.expire(service::now_ms())).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(expired = n, "bundles expired"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not expire bundles"),
                    Err(e) => tracing::warn!(error = %e, "the expiry task failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(EXPIRY_INTERVAL) => {}
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                }
            }
        });
    }
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let budget = Arc::new(Semaphore::new(MAX_BUFFERED_POSTS / BUDGET_UNIT));
    let devices = Devices::default();
    let gate = Arc::new(Mutex::new(Gate::new(opts.gate)));
    let started = std::time::Instant::now();
    let mut stop_accept = stop.clone();
    while !*stop_accept.borrow() {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            r = stop_accept.changed() => if r.is_err() { break } else { continue },
        };
        let Some(incoming) = incoming else { break };
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
        let from = incoming.remote_address();
        if !incoming.remote_address_validated() {
            // Stateless, and answered only at the real address.
            if let Err(e) = incoming.retry() {
                e.into_incoming().refuse();
            }
            continue;
        }
        let source = Source::of(from.ip());
        let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let admitted = gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open(source, now_ms);
        if let Err(why) = admitted {
            tracing::info!(%from, %why, "refused a connection");
            incoming.refuse();
            continue;
        }
        let door = Door {
            gate: gate.clone(),
            source,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%from, "refused a connection: the relay is at its connection limit");
            incoming.refuse();
            continue;
        };
        let (relay, devices, stop, budget) = (relay.clone(), devices.clone(), stop.clone(), budget.clone());
        tasks.spawn(async move {
            let _slot = (slot, door);
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "handshake failed");
                    return;
                }
            };
            let Some(peer) = tls::peer_device(&conn) else {
                return;
            };
            let admitted = devices.admit(peer, &conn);
            tracing::debug!(peer = %peer.short(), from = %conn.remote_address(), "device connected");
            let shared = Shared {
                relay,
                peer,
                source,
                requests: admitted.requests.clone(),
                budget,
            };
            connection(shared, conn, stop).await;
        });
    }
    endpoint.close(0u32.into(), b"relay stopping");
    tasks.shutdown().await;
    endpoint.wait_idle().await;
    tracing::info!("relay stopped");
    Ok(())
}

/// What a connection's streams share.
struct Shared<S: RelayStore> {
    relay: Arc<Relay<S>>,
    /// The device the handshake proved.
    peer: DeviceId,
    /// The address it connected from.
    source: Source,
    /// The device's request permits.
    requests: Arc<Semaphore>,
    /// The relay's memory for posts ([`MAX_BUFFERED_POSTS`]).
    budget: Arc<Semaphore>,
}

impl<S: RelayStore> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            relay: self.relay.clone(),
            peer: self.peer,
            source: self.source,
            requests: self.requests.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// Serves one connection's streams until it closes, idles, or the relay stops.
async fn connection<S: RelayStore + 'static>(
    shared: Shared<S>,
    conn: quinn::Connection,
    mut stop: watch::Receiver<bool>,
) {
    let peer = shared.peer;
    let mut open = JoinSet::new();
    loop {
        let busy = !open.is_empty();
        tokio::select! {
            streams = conn.accept_bi() => match streams {
                Ok((send, recv)) => {
                    open.spawn(stream(shared.clone(), send, recv));
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.short(), reason = %e, "connection ended");
                    break;
                }
            },
            Some(_) = open.join_next(), if busy => {}
            _ = tokio::time::sleep(IDLE_CONNECTION), if !busy => {
                tracing::debug!(peer = %peer.short(), "closed an idle connection");
                conn.close(0u32.into(), b"idle");
                break;
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
    open.shutdown().await;
}

/// What the first bytes of a request lead to.
enum Read {
    /// A request, and the memory it holds until answered (for a post).
    Request(Request, Option<OwnedSemaphorePermit>),
    /// Refused from its header: the rest is not read.
    Refused(Response),
}

/// Answers the request on one stream.
async fn stream<S: RelayStore + 'static>(
    shared: Shared<S>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let peer = shared.peer;
    let Ok(_permit) = shared.requests.clone().acquire_owned().await else {
        return;
    };
    let answer = match read_request(&shared, &mut recv).await {
        Ok(Read::Request(req, memory)) => {
            let (kind, space) = (req.kind(), req.space());
            // A device that gives up on a long fetch (it has something to
            // post first) drops the stream: stop waiting for it, or abandoned
            // fetches would hold this device's share of requests for 25 s.
            let stopped = send.stopped();
            let answer = tokio::select! {
                answer = shared.relay.answer(Caller { device: peer, source: shared.source }, req) => answer,
                _ = stopped => {
                    tracing::debug!(peer = %peer.short(), "a device stopped waiting for an answer");
                    return;
                }
            };
            drop(memory);
            log_answer(&peer, kind, &space, &answer);
            answer
        }
        Ok(Read::Refused(answer)) => {
            tracing::info!(peer = %peer.short(), answer = ?answer, "refused a post from its header");
            let _ = recv.stop(0u32.into());
            answer
        }
        Err(ReadFail::Wire(e)) => {
            tracing::info!(peer = %peer.short(), error = %e, "malformed request");
            let _ = recv.stop(0u32.into());
            Response::failure(format!("the relay could not read the request: {e}"))
        }
        Err(ReadFail::TimedOut) => {
            tracing::info!(peer = %peer.short(), "a request was too slow to arrive");
            let _ = recv.stop(0u32.into());
            Response::failure("the request was too slow to arrive")
        }
        Err(e @ (ReadFail::Ended | ReadFail::Broken(_))) => {
            tracing::debug!(peer = %peer.short(), error = %e, "a request stream ended early");
            return;
        }
    };
    let bytes = match answer.encode() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not encode an answer");
            match Response::failure("the relay could not encode its answer").encode() {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = io::write_and_finish(&mut send, &bytes).await {
        tracing::debug!(peer = %peer.short(), error = %e, "could not send an answer");
    }
}

fn log_answer(peer: &DeviceId, kind: u8, space: &SpaceTag, answer: &Response) {
    let (peer, space) = (peer.short(), space.short());
    match answer {
        Response::Failure(text) => tracing::info!(%peer, kind, %space, %text, "refused"),
        Response::Bundles { items, more } => {
            let bytes: usize = items.iter().map(|i| i.1.len()).sum();
            tracing::debug!(%peer, %space, count = items.len(), bytes, more, "fetched")
        }
        _ => tracing::debug!(%peer, kind, %space, "answered"),
    }
}

/// The length of a postcard varint holding `n`.
fn varint_len(n: usize) -> usize {
    let mut len = 1;
    let mut n = n >> 7;
    while n > 0 {
        len += 1;
        n >>= 7;
    }
    len
}

/// The bundle length a post frame of `len` bytes announces (type byte, tag,
/// varint length, bundle), if it is consistent.
fn post_bundle_len(len: usize) -> Option<usize> {
    let rest = len.checked_sub(1 + 16)?;
    (1..=5).find_map(|v| {
        let bundle = rest.checked_sub(v)?;
        (varint_len(bundle) == v).then_some(bundle)
    })
}

/// Reads one request; a post is judged from its first 17 bytes first.
async fn read_request<S: RelayStore + 'static>(
    shared: &Shared<S>,
    recv: &mut quinn::RecvStream,
) -> Result<Read, ReadFail> {
    let len = io::read_len(recv, READ_TIMEOUT).await?;
    let mut kind = [0u8; 1];
    io::read_exact(recv, &mut kind, READ_TIMEOUT).await?;
    if kind[0] != POST {
        if len > MAX_CONTROL_FRAME {
            return Err(ReadFail::Wire(duet_sync::proto::wire::WireError::TooLarge(
                "request",
            )));
        }
        let frame = io::read_rest(recv, len, &kind).await?;
        let req = Request::decode(&frame).map_err(ReadFail::Wire)?;
        return Ok(Read::Request(req, None));
    }
    let Some(bundle_len) = post_bundle_len(len) else {
        return Err(ReadFail::Wire(duet_sync::proto::wire::WireError::Malformed(
            "post",
        )));
    };
    let mut start = [0u8; 17];
    start[0] = POST;
    io::read_exact(recv, &mut start[1..], READ_TIMEOUT).await?;
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&start[1..]);
    let space = SpaceTag(tag);
    let check = {
        let (relay, peer) = (shared.relay.clone(), shared.peer);
        tokio::task::spawn_blocking(move || relay.refuse_post_early(&peer, &space, bundle_len)).await
    };
    match check {
        Ok(Some(refusal)) => return Ok(Read::Refused(refusal)),
        Ok(None) => {}
        Err(e) => return Err(ReadFail::Broken(e.to_string())),
    }
    let units = u32::try_from(len.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX);
    let memory =
        match tokio::time::timeout(READ_TIMEOUT, shared.budget.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ReadFail::Broken("the relay is stopping".into())),
            Err(_) => {
                tracing::warn!(peer = %shared.peer.short(), "a post waited too long for memory");
                return Ok(Read::Refused(Response::failure(
                    "the relay is too busy to take this bundle now; try again later",
                )));
            }
        };
    let frame = io::read_rest(recv, len, &start).await?;
    let req = Request::decode(&frame).map_err(ReadFail::Wire)?;
    Ok(Read::Request(req, Some(memory)))
}

/// A connection the [`Gate`] let in; counted out when dropped.
struct Door {
    gate: Arc<Mutex<Gate>>,
    source: Source,
}

impl Drop for Door {
    fn drop(&mut self) {
        self.gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .close(self.source);
    }
}

/// Open connections and request permits per device.
#[derive(Clone, Default)]
struct Devices(Arc<Mutex<DeviceTable>>);

#[derive(Default)]
struct DeviceTable {
    next: u64,
    by_device: HashMap<DeviceId, DeviceSlot>,
}

struct DeviceSlot {
    open: VecDeque<(u64, quinn::Connection)>,
    requests: Arc<Semaphore>,
}

/// One admitted connection; forgotten when dropped.
struct Admitted {
    all: Devices,
    peer: DeviceId,
    id: u64,
    requests: Arc<Semaphore>,
}

impl Devices {
    /// Counts `conn` from `peer`, closing the device's oldest connection if
    /// it is at its share.
    fn admit(&self, peer: DeviceId, conn: &quinn::Connection) -> Admitted {
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let id = table.next;
        table.next += 1;
        let slot = table.by_device.entry(peer).or_insert_with(|| DeviceSlot {
            open: VecDeque::new(),
            requests: Arc::new(Semaphore::new(MAX_REQUESTS_PER_DEVICE)),
        });
        while slot.open.len() >= MAX_CONNECTIONS_PER_DEVICE {
            if let Some((_, oldest)) = slot.open.pop_front() {
                tracing::info!(peer = %peer.short(), "closed the oldest connection of a device over its share");
                oldest.close(0u32.into(), b"replaced by a newer connection");
            }
        }
        slot.open.push_back((id, conn.clone()));
        let requests = slot.requests.clone();
        Admitted {
            all: self.clone(),
            peer,
            id,
            requests,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.all.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = table.by_device.get_mut(&self.peer) {
            slot.open.retain(|(id, _)| *id != self.id);
            if slot.open.is_empty() {
                table.by_device.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's connections are the sync transport's, bounded: no path MTU
    /// probes (they were two thirds of a short sync's bytes), its timeouts.
    #[test]
    fn the_relay_transport_builds_on_the_sync_transport() {
        let relay = format!("{:?}", transport());
        let sync = format!("{:?}", duet_sync::net::tls::transport());
        assert!(relay.contains("mtu_discovery_config: None"), "{relay}");
        assert!(sync.contains("mtu_discovery_config: None"), "{sync}");
        let field = |s: &str, name: &str| {
            s.split(name)
                .nth(1)
                .and_then(|r| r.split(',').next())
                .map(str::to_string)
        };
        for name in ["max_idle_timeout", "keep_alive_interval"] {
            assert_eq!(field(&relay, name), field(&sync, name), "{name}");
        }
    }

    #[test]
    fn post_bundle_lengths_are_read_from_the_header() {
        for bundle in [1usize, 127, 128, 16_383, 16_384, 1 << 21, (1 << 21) - 1, 32 << 20] {
            let frame = Request::encode_post(SpaceTag([0; 16]), &vec![0; bundle]).map(|f| f.len() - 4);
            assert_eq!(
                post_bundle_len(frame.unwrap_or(0)),
                Some(bundle),
                "bundle of {bundle}"
            );
        }
        assert_eq!(post_bundle_len(17), None);
        assert_eq!(post_bundle_len(3), None);
    }
}

//! Sync between this home and the couple's other devices, over QUIC.
//!
//! [`Home`] is the driver's [`Replica`]: every received frame is handled inside
//! a store write, so what a peer sends is either verified and stored together
//! with its signatures, or not stored at all. One-shot sync ([`sync_once`]) and
//! the long-running service ([`serve`]) share the same driver.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_model::DeviceId;
use duet_sync::net::driver::{self, DriveError, Mode, Replica, Report};
use duet_sync::net::tls::{self, ALPN_SYNC, AllowList};
use duet_sync::proto::frame::Frame;
use duet_sync::proto::session::{Event, Session, SyncError};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::home::Home;

/// How long to wait for a peer to answer a connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `serve` waits, after a handshake, for the peer to open its stream.
/// An honest dialler opens it and sends Hello at once; without this bound a
/// member device that connects and opens nothing would hold its connection
/// (kept open by keep-alives) and a task of `serve` for as long as it likes.
pub const FIRST_STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections one device may hold open with `serve` at once. A
/// device needs one (two while a dial crosses an accept); the cap keeps one
/// member key from tying up the server with many idle connections. A new
/// connection over the cap replaces the device's oldest one: a device that
/// restarts cannot close its old connections, which linger until QUIC's idle
/// timeout, and must not be shut out meanwhile. A device can only push out its
/// own connections.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 4;

/// Open connections per device, for [`MAX_CONNECTIONS_PER_DEVICE`].
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<ConnectionTable>>);

#[derive(Default)]
struct ConnectionTable {
    next: u64,
    by_device: HashMap<DeviceId, VecDeque<(u64, quinn::Connection)>>,
}

/// One counted connection; uncounted when dropped.
struct Counted {
    all: Connections,
    peer: DeviceId,
    id: u64,
}

impl Connections {
    /// Counts `conn` from `peer`, closing the peer's oldest connection if it
    /// is at the cap.
    fn admit(&self, peer: DeviceId, conn: &quinn::Connection) -> Option<Counted> {
        let mut table = self.0.lock().ok()?;
        let id = table.next;
        table.next += 1;
        let open = table.by_device.entry(peer).or_default();
        while open.len() >= MAX_CONNECTIONS_PER_DEVICE {
            if let Some((_, oldest)) = open.pop_front() {
                tracing::info!(peer = %peer.short(), "closed the oldest connection of a device over its share");
                oldest.close(0u32.into(), b"replaced by a newer connection");
            }
        }
        open.push_back((id, conn.clone()));
        Some(Counted {
            all: self.clone(),
            peer,
            id,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Ok(mut table) = self.all.0.lock()
            && let Some(open) = table.by_device.get_mut(&self.peer)
        {
            open.retain(|(id, _)| *id != self.id);
            if open.is_empty() {
                table.by_device.remove(&self.peer);
            }
        }
    }
}

/// What a sync moved, for people and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The other device.
    pub peer: DeviceId,
    /// Changes received.
    pub changes_in: usize,
    /// Sync messages sent and received.
    pub messages_out: usize,
    /// Sync messages received.
    pub messages_in: usize,
    /// Bytes sent.
    pub bytes_out: usize,
    /// Bytes received.
    pub bytes_in: usize,
    /// Milliseconds taken.
    pub millis: u64,
}

impl From<Report> for SyncReport {
    fn from(r: Report) -> Self {
        SyncReport {
            peer: r.peer,
            changes_in: r.stats.changes_in,
            messages_out: r.stats.messages_out,
            messages_in: r.stats.messages_in,
            bytes_out: r.stats.bytes_out,
            bytes_in: r.stats.bytes_in,
            millis: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

fn local(e: impl std::fmt::Display) -> DriveError {
    DriveError::Local(e.to_string())
}

impl Replica for Home {
    fn receive(
        &mut self,
        session: &mut Session,
        frame: &Frame,
        now_ms: u64,
    ) -> Result<Vec<Event>, DriveError> {
        let started = std::time::Instant::now();
        let outcome = self
            .store_mut()
            .write_with(|w| -> Result<Vec<Event>, WriteError> {
                let mut events = session.handle(frame, w.doc, now_ms).map_err(WriteError::Sync)?;
                for e in &mut events {
                    if let Event::Applied {
                        attestations,
                        applied,
                        document,
                        ..
                    } = e
                    {
                        w.attestations.extend(attestations.iter().copied());
                        w.applied.append(applied);
                        if let Some(bytes) = document.take() {
                            w.document = Some(bytes);
                        }
                    }
                }
                Ok(events)
            });
        tracing::debug!(micros = started.elapsed().as_micros() as u64, "frame stored");
        match outcome {
            Ok(events) => {
                if events.iter().any(|e| matches!(e, Event::Applied { .. })) {
                    self.notify_changed();
                }
                Ok(events)
            }
            Err(WriteError::Sync(e)) => Err(DriveError::Sync(e)),
            Err(WriteError::Store(e)) => {
                // The session handled the frame, the store did not keep it.
                // The peer learns why, without this device's paths.
                let why = match e {
                    duet_store::StoreError::DiskFull(_) => "the disk is full",
                    duet_store::StoreError::Busy(_) => "the database stayed locked",
                    _ => "a local storage error",
                };
                let _ = session.fail_to_store(why);
                Err(local(e))
            }
        }
    }

    fn generate(&mut self, session: &mut Session) -> Result<(), DriveError> {
        // A peer revoked while its session was open is cut off here: generate
        // runs after every frame and every change of this home.
        let peer = session.peer();
        let active = session.is_joining() || self.membership().map_err(local)?.is_active(&peer);
        if !active && !session.is_joining() {
            return Err(DriveError::Sync(
                session.fail(SyncError::NotAMember(peer.short())),
            ));
        }
        let atts = self.store_mut().attestations().map_err(local)?;
        self.store_mut()
            .read(|doc| session.generate(doc, &atts))
            .map_err(local)
    }

    fn is_synced(&mut self, session: &Session) -> Result<bool, DriveError> {
        self.store_mut().read(|doc| session.is_synced(doc)).map_err(local)
    }

    fn save_state(&mut self, session: &Session) -> Result<(), DriveError> {
        let peer = session.peer();
        self.store_mut()
            .set_sync_state(&peer, &session.saved_state())
            .map_err(local)?;
        // Writes that apply synced changes leave compaction for later, to keep
        // each frame's write short: the end of a session is later.
        if let Err(e) = self.store_mut().compact_if_due() {
            tracing::warn!(error = %e, "could not compact the store");
        }
        Ok(())
    }
}

/// A store write that the session may refuse.
enum WriteError {
    Sync(duet_sync::proto::session::SyncError),
    Store(duet_store::StoreError),
}

impl From<duet_store::StoreError> for WriteError {
    fn from(e: duet_store::StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl Home {
    /// The space's id.
    pub fn space_id(&mut self) -> Result<String> {
        Ok(self.read(duet_model::space::space_id)?.unwrap_or_default())
    }

    /// The devices allowed to connect: active members other than this one.
    pub fn allowed_peers(&mut self) -> Result<Vec<DeviceId>> {
        let me = self.device_id();
        let members = self.membership()?;
        Ok(members.active().into_iter().filter(|d| *d != me).collect())
    }

    /// A new session with `peer`, resuming its saved sync state.
    pub(crate) fn session_with(&mut self, peer: DeviceId) -> Result<Session> {
        let space = self.space_id()?;
        let saved = self.store_mut().sync_state(&peer)?;
        let founder = self.founder()?;
        Ok(Session::new(peer, &space, founder, saved.as_deref(), 0))
    }

    /// Revokes a device of the space (any unique prefix of its id): it can no
    /// longer connect, and changes it makes from now on are refused.
    pub fn revoke_device(&mut self, prefix: &str) -> Result<duet_model::Member> {
        let members = self.membership()?;
        let p = prefix.trim().to_ascii_lowercase();
        let found: Vec<&duet_model::Member> = members
            .members()
            .iter()
            .filter(|m| !p.is_empty() && m.id.to_string().starts_with(&p))
            .collect();
        let target = match found.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(duet_model::ModelError::NotFound {
                    what: "device",
                    prefix: prefix.to_string(),
                }
                .into());
            }
            many => {
                return Err(duet_model::ModelError::Ambiguous {
                    what: "device",
                    prefix: prefix.to_string(),
                    candidates: many.iter().map(|m| m.id.short()).collect(),
                }
                .into());
            }
        };
        if target.id == self.device_id() {
            return Err(duet_model::ModelError::Refused(
                "this is the device you are using; revoke it from another of the couple's devices".into(),
            )
            .into());
        }
        // The revocation and a new space key (with envelopes for the devices
        // still active) land together: from this change on, what this device
        // seals is unreadable to the revoked one.
        let me = self.store_mut().device_secret()?;
        let seat = self.seat();
        let founder = self.founder()?;
        self.store_mut().write(|doc| -> Result<()> {
            duet_model::Editor::new(doc, seat, crate::home::now_ms()).revoke_device(target.id)?;
            let mut ring = duet_sync::proto::keyring::Keyring::from_document(doc, &me);
            crate::keys::add_key(doc, &mut ring, seat, founder)?;
            Ok(())
        })?;
        self.notify_changed();
        let members = self.membership()?;
        members
            .get(&target.id)
            .cloned()
            .ok_or_else(|| Error::Inconsistent {
                path: self.dir().display().to_string(),
                detail: "the revoked device vanished".into(),
            })
    }
}

/// A QUIC endpoint bound to `addr`, with this device's key.
fn client_endpoint(
    home: &Arc<Mutex<Home>>,
    peer: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::ClientConfig)> {
    let (secret, allowed) = {
        let mut h = lock(home)?;
        (h.store_mut().device_secret()?, h.allowed_peers()?)
    };
    let policy = Arc::new(AllowList::new(allowed));
    let config = tls::client_config(&secret, policy, ALPN_SYNC).map_err(|e| Error::Net(e.to_string()))?;
    let bind: SocketAddr = if peer.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| Error::Net("bad bind address".into()))?;
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| Error::Net(format!("cannot open a UDP socket: {e}")))?;
    Ok((endpoint, config))
}

pub(crate) fn lock(home: &Arc<Mutex<Home>>) -> Result<std::sync::MutexGuard<'_, Home>> {
    home.lock()
        .map_err(|_| Error::Net("the home's lock was poisoned by an earlier failure".into()))
}

/// Connects to `addr` and syncs until both devices hold the same heads.
pub async fn sync_once(home: Arc<Mutex<Home>>, addr: SocketAddr) -> Result<SyncReport> {
    let (endpoint, config) = client_endpoint(&home, addr)?;
    let name = lock(&home)?.sync_server_name()?;
    let connecting = endpoint
        .connect_with(config, addr, &name)
        .map_err(|e| Error::Net(format!("cannot connect to {addr}: {e}")))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            Error::Net(format!(
                "no answer from {addr} within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| Error::Net(format!("cannot connect to {addr}: {}", explain_connect(&e))))?;
    let peer =
        tls::peer_device(&conn).ok_or_else(|| Error::Net("the peer presented no device key".into()))?;
    // TLS 1.3 lets this side finish its handshake before the peer has judged
    // this device's key, so a refusal can surface here rather than above:
    // name it the same way.
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| Error::Net(format!("cannot open a stream to {addr}: {}", explain_connect(&e))))?;
    let session = lock(&home)?.session_with(peer)?;
    let report = driver::drive(session, send, recv, home.clone(), Mode::OneShot).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    let report = report?;
    lock(&home)?
        .store_mut()
        .set_peer_address(&peer, &addr.to_string())?;
    Ok(report.into())
}

fn explain_connect(e: &quinn::ConnectionError) -> String {
    driver::connection_error(e).to_string()
}

/// Options for [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Devices to dial and keep connected to.
    pub peers: Vec<SocketAddr>,
    /// How often to look for edits made by other processes on this home.
    pub poll: Duration,
    /// A relay to post to and fetch from; when `None`, the relay set in the
    /// space (if any).
    pub relay: Option<String>,
    /// Announce this device on the local network (mDNS) so that the couple's
    /// other devices find it without an address.
    pub discovery: bool,
}

impl ServeOptions {
    /// Listens on `listen`, dials nobody, polls every 25 ms, uses the space's
    /// relay if one is set, and does not announce itself.
    pub fn new(listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            listen,
            peers: Vec::new(),
            poll: Duration::from_millis(25),
            relay: None,
            discovery: false,
        }
    }
}

/// Serves the couple's devices until `stop` turns true: accepts paired devices,
/// dials `opts.peers` (reconnecting with backoff), and pushes every change of
/// this home (including those made by other processes) to every connected peer.
/// `ready` receives the bound address once listening.
pub async fn serve(
    home: Arc<Mutex<Home>>,
    opts: ServeOptions,
    stop: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    let (secret, allowed) = {
        let mut h = lock(&home)?;
        (h.store_mut().device_secret()?, h.allowed_peers()?)
    };
    let allow = Arc::new(AllowList::new(allowed));
    // The device key is shown only to clients that name the couple (see
    // `crate::sni`). A home made before space keys existed gets its first
    // here, if this device is a member.
    let gate = {
        let mut h = lock(&home)?;
        let ring = h.ensure_space_keys().or_else(|_| h.keyring())?;
        crate::sni::MemberGate::new(&ring)
    };
    let server = tls::gated_server_config(&secret, allow.clone(), &[ALPN_SYNC], Arc::new(gate.clone()))
        .map_err(|e| Error::Net(e.to_string()))?;
    let endpoint = quinn::Endpoint::server(server, opts.listen)
        .map_err(|e| Error::Net(format!("cannot listen on {}: {e}", opts.listen)))?;
    let client =
        tls::client_config(&secret, allow.clone(), ALPN_SYNC).map_err(|e| Error::Net(e.to_string()))?;
    let local = endpoint.local_addr().map_err(|e| Error::Net(e.to_string()))?;
    tracing::info!(%local, "serving");
    if let Some(r) = ready {
        let _ = r.send(local);
    }

    // Tick `changed` whenever this home's document changes: by a sync session
    // (the home notifies) or by another process (SQLite's data_version moves).
    let (changed_tx, changed_rx) = watch::channel(0u64);
    lock(&home)?.set_notifier(changed_tx.clone());
    let mut tasks = tokio::task::JoinSet::new();
    {
        let home = home.clone();
        let allow = allow.clone();
        let gate = gate.clone();
        let mut stop = stop.clone();
        let mut synced = changed_rx.clone();
        let poll = opts.poll;
        // The starting point is read now, so an edit made by another process
        // right after `serve` starts is noticed on the first tick.
        let first = lock(&home)?.store_mut().data_version().ok();
        // Other `duet` processes poke this socket after each edit, so their
        // edits go out at once rather than on the next poll.
        let wake = crate::wake::listen(lock(&home)?.dir());
        tasks.spawn(async move {
            let mut last = first;
            loop {
                let poked = async {
                    match &wake {
                        Some(w) => w.poked().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = poked => {}
                    _ = stop.changed() => if *stop.borrow() { return },
                }
                let Ok(mut h) = lock(&home) else { return };
                let version = h.store_mut().data_version().ok();
                let elsewhere = version != last;
                if elsewhere {
                    tracing::debug!("the home changed in another process");
                    h.notify_changed();
                }
                last = version;
                // Membership may have changed (a new device, a revocation),
                // through another process or through a sync.
                let by_sync = synced.has_changed().unwrap_or(false);
                if by_sync {
                    synced.mark_unchanged();
                }
                if (elsewhere || by_sync)
                    && let Ok(peers) = h.allowed_peers()
                {
                    allow.replace(peers);
                    // And new space keys (a rotation) for the server names.
                    if let Ok(ring) = h.keyring() {
                        gate.replace(&ring);
                    }
                }
                // Live sessions never end, so their changes are compacted here,
                // between frames rather than inside one.
                if by_sync && let Err(e) = h.store_mut().compact_if_due() {
                    tracing::warn!(error = %e, "could not compact the store");
                }
            }
        });
    }
    // Announced for as long as this function runs; devices found on the
    // network are dialled (by one side of each pair).
    let announced = if opts.discovery {
        crate::lan::announce(&home, local).map(Arc::new)
    } else {
        None
    };
    if let Some(announcer) = &announced {
        let (home, endpoint, client) = (home.clone(), endpoint.clone(), client.clone());
        let (changed, stop, announcer) = (changed_rx.clone(), stop.clone(), announcer.clone());
        tasks.spawn(
            async move { crate::lan::dial_found(home, endpoint, client, announcer, changed, stop).await },
        );
    }
    let relay = match opts.relay.clone() {
        Some(r) => Some(r),
        None => lock(&home)?.relay()?,
    };
    if let Some(addr) = relay {
        let (home, changed, stop) = (home.clone(), changed_rx.clone(), stop.clone());
        tasks.spawn(async move { crate::relay::relay_forever(home, addr, changed, stop).await });
    }
    for addr in opts.peers.clone() {
        let (home, endpoint, client) = (home.clone(), endpoint.clone(), client.clone());
        let (changed, stop) = (changed_rx.clone(), stop.clone());
        tasks.spawn(async move { dial_forever(home, endpoint, client, addr, changed, stop, None).await });
    }
    let mut stop_accept = stop.clone();
    let connections = Connections::default();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop_accept.changed() => if *stop_accept.borrow() { break } else { continue },
        };
        let Some(incoming) = incoming else { break };
        let (home, changed, stop) = (home.clone(), changed_rx.clone(), stop.clone());
        let connections = connections.clone();
        tasks.spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(error = %e, "refused a connection");
                    return;
                }
            };
            let Some(peer) = tls::peer_device(&conn) else {
                return;
            };
            let Some(_counted) = connections.admit(peer, &conn) else {
                return;
            };
            // Bounded: a peer that connects and never opens a stream is
            // dropped (see FIRST_STREAM_TIMEOUT). Once the stream is open, the
            // session's own idle timer takes over.
            let (send, recv) = match tokio::time::timeout(FIRST_STREAM_TIMEOUT, conn.accept_bi()).await {
                Ok(Ok(streams)) => streams,
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(peer = %peer.short(), "closed a connection that opened no stream");
                    conn.close(0u32.into(), b"no stream opened");
                    return;
                }
            };
            let session = match lock(&home).and_then(|mut h| h.session_with(peer)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a session");
                    return;
                }
            };
            match driver::drive(session, send, recv, home, Mode::Live { changed, stop }).await {
                Ok(r) => {
                    tracing::info!(peer = %r.peer.short(), changes_in = r.stats.changes_in, "session ended")
                }
                Err(e) => tracing::warn!(peer = %peer.short(), error = %e, "session failed"),
            }
        });
    }
    endpoint.close(0u32.into(), b"shutting down");
    tasks.shutdown().await;
    endpoint.wait_idle().await;
    Ok(())
}

/// Keeps a live session with `addr`, reconnecting with exponential backoff;
/// with `give_up_after`, stops after that many failed attempts in a row (a
/// device found on the network that went away).
pub(crate) async fn dial_forever(
    home: Arc<Mutex<Home>>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    addr: SocketAddr,
    changed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    give_up_after: Option<u32>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut failures = 0u32;
    while !*stop.borrow() {
        let attempt = async {
            // Computed per attempt: the day, and the keys, change.
            let name = lock(&home)
                .and_then(|mut h| h.sync_server_name())
                .map_err(|e| e.to_string())?;
            let conn = endpoint
                .connect_with(client.clone(), addr, &name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let peer = tls::peer_device(&conn).ok_or("no device key")?;
            let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let session = lock(&home)
                .and_then(|mut h| h.session_with(peer))
                .map_err(|e| e.to_string())?;
            let _ = lock(&home).map(|mut h| h.store_mut().set_peer_address(&peer, &addr.to_string()));
            let mode = Mode::Live {
                changed: changed.clone(),
                stop: stop.clone(),
            };
            driver::drive(session, send, recv, home.clone(), mode)
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(_) => {
                backoff = Duration::from_millis(250);
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if give_up_after.is_some_and(|n| failures >= n) {
                    tracing::info!(%addr, error = %e, "peer gone");
                    return;
                }
                tracing::info!(%addr, error = %e, retry_in = ?backoff, "peer unreachable")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

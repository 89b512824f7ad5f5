//! A UDP fault proxy for tests: it sits between a QUIC client and a QUIC
//! server on loopback and makes the path between them bad on purpose.
//!
//! The client dials the proxy's address instead of the server's. For every
//! client address the proxy sees, it opens one upstream socket towards the
//! server (a *flow*), so the server sees one distinct peer per client, as
//! through a NAT. Each datagram, in either direction, may be
//!
//! - **dropped** (never sent),
//! - **delayed** by a random time up to [`Faults::max_delay`],
//! - **held back** ([`Faults::reorder`]): sent one to two [`Faults::hold`]s
//!   later than its delay says, so datagrams that arrived after it overtake it,
//! - **duplicated** (a second copy, with its own random delay).
//!
//! The decisions come from a seeded xorshift generator, one stream per flow
//! and direction, seeded from the proxy's seed, the flow's number and the
//! direction: the *n*-th datagram of a direction gets the same fate in every run
//! with the same seed, however the two directions interleave (which datagrams
//! QUIC sends still depends on timing, so a run is reproducible in its faults,
//! not byte for byte). Print [`UdpProxy::seed`] when a test fails.
//!
//! The path can also vanish: [`UdpProxy::cut`] stops forwarding at once
//! (datagrams already scheduled are lost too), [`UdpProxy::cut_after`] after a
//! number of datagrams, and [`UdpProxy::heal`] restores it. [`UdpProxy::stats`]
//! counts what happened, so a test can check that the faults really occurred.
//!
//! ```ignore
//! let proxy = UdpProxy::start(server_addr, Faults::lossy(), 7).await.unwrap();
//! sync_once(home, proxy.addr()).await?;
//! assert!(proxy.stats().dropped > 0, "seed {}", proxy.seed());
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// The largest datagram the proxy relays (the largest a UDP socket can carry).
const MAX_DATAGRAM: usize = 65_535;

/// What the proxy does to the datagrams it relays. Probabilities are in 0..=1
/// and apply to each datagram independently, in both directions.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a datagram is lost.
    pub drop: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back (by one to two
    /// [`Faults::hold`]s on top of its delay), so that later ones overtake it.
    pub reorder: f64,
    /// Every copy waits a random time in `0..=max_delay` before it is sent.
    pub max_delay: Duration,
    /// How much longer, at least, a held-back datagram waits; more than
    /// `max_delay`, so that the next datagrams overtake it.
    pub hold: Duration,
}

impl Faults {
    /// A perfect path: everything forwarded at once, in order.
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            max_delay: Duration::ZERO,
            hold: Duration::ZERO,
        }
    }

    /// A bad path: 20% lost, 10% duplicated, 10% held back by 60 to 120 ms,
    /// every datagram (and copy) delayed by 0 to 50 ms.
    pub fn lossy() -> Faults {
        Faults {
            drop: 0.20,
            duplicate: 0.10,
            reorder: 0.10,
            max_delay: Duration::from_millis(50),
            hold: Duration::from_millis(60),
        }
    }
}

/// What the proxy did so far (both directions together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams that arrived at the proxy.
    pub received: u64,
    /// Datagrams sent on (copies included).
    pub forwarded: u64,
    /// Datagrams lost on purpose ([`Faults::drop`]).
    pub dropped: u64,
    /// Extra copies made ([`Faults::duplicate`]).
    pub duplicated: u64,
    /// Datagrams sent after one that arrived later than them (by a hold or
    /// by the random delays).
    pub reordered: u64,
    /// Datagrams lost because the path was cut (or had no server yet),
    /// including those scheduled before the cut and due after it.
    pub blackholed: u64,
    /// Flows (client addresses) seen.
    pub flows: u64,
}

/// xorshift64*: small, fast, and plenty for deciding fates.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams;
        // never zero (xorshift's fixed point).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0.0..1.0`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..=max`, to the microsecond.
    fn upto(&mut self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.next() % micros.saturating_add(1))
    }
}

/// The proxy's state, shared by its tasks.
#[derive(Debug)]
struct Shared {
    seed: u64,
    faults: Mutex<Faults>,
    upstream: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    /// Datagrams still to forward before the path is cut; `u64::MAX`: no limit.
    budget: AtomicU64,
    cut_at: Mutex<Option<Instant>>,
    tasks: Mutex<Vec<AbortHandle>>,
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    blackholed: AtomicU64,
    flows: AtomicU64,
}

impl Shared {
    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap()
    }

    fn cut_now(&self) {
        if !self.cut.swap(true, Ordering::SeqCst) {
            *self.cut_at.lock().unwrap() = Some(Instant::now());
        }
    }

    /// Whether a datagram may go through now: false once the path is cut,
    /// or when this datagram exhausts the budget (which cuts it).
    fn admit(&self) -> bool {
        if self.cut.load(Ordering::SeqCst) {
            return false;
        }
        let took = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| match b {
                u64::MAX => Some(u64::MAX),
                0 => None,
                b => Some(b - 1),
            });
        if took.is_err() {
            self.cut_now();
            return false;
        }
        true
    }

    fn spawned(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap();
        if tasks.len() >= 1024 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(handle);
    }
}

/// One direction of one flow: its fates and its order.
struct Direction {
    rng: Rng,
    /// Number of the next datagram to arrive (from 1).
    next_seq: u64,
    /// The highest number sent so far: a datagram sent below it was overtaken.
    max_sent: Arc<AtomicU64>,
}

impl Direction {
    fn new(seed: u64, flow: u64, upward: bool) -> Direction {
        let stream = seed ^ flow.wrapping_mul(0xA24B_AED4_963E_E407) ^ if upward { 0 } else { 1 << 63 };
        Direction {
            rng: Rng::new(stream),
            next_seq: 1,
            max_sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Decides the fate of one datagram and schedules its copies on `socket`
    /// to `to` (`None`: the socket is connected).
    async fn relay(
        &mut self,
        shared: &Arc<Shared>,
        socket: &Arc<UdpSocket>,
        to: Option<SocketAddr>,
        data: &[u8],
    ) {
        shared.received.fetch_add(1, Ordering::Relaxed);
        let seq = self.next_seq;
        self.next_seq += 1;
        let f = shared.faults();
        // Always draw the same numbers, so one datagram's fate never shifts the
        // fates of the next ones.
        let (lost, twice, held) = (self.rng.unit(), self.rng.unit(), self.rng.unit());
        let (delay, extra, copy_delay) = (
            self.rng.upto(f.max_delay),
            self.rng.upto(f.hold),
            self.rng.upto(f.max_delay),
        );
        if !shared.admit() {
            shared.blackholed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if lost < f.drop {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A held datagram waits past every delay a later one can get.
        let delay = if held < f.reorder {
            delay + f.hold + extra
        } else {
            delay
        };
        self.send(shared, socket, to, data, seq, delay).await;
        if twice < f.duplicate {
            shared.duplicated.fetch_add(1, Ordering::Relaxed);
            self.send(shared, socket, to, data, seq, copy_delay).await;
        }
    }

    /// Sends one copy after `delay`: at once (in order) if there is none,
    /// otherwise from a task of its own.
    async fn send(
        &self,
        shared: &Arc<Shared>,
        socket: &Arc<UdpSocket>,
        to: Option<SocketAddr>,
        data: &[u8],
        seq: u64,
        delay: Duration,
    ) {
        let (shared2, socket, data, max_sent) = (
            shared.clone(),
            socket.clone(),
            data.to_vec(),
            self.max_sent.clone(),
        );
        let go = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if shared2.cut.load(Ordering::SeqCst) {
                shared2.blackholed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if max_sent.fetch_max(seq, Ordering::SeqCst) > seq {
                shared2.reordered.fetch_add(1, Ordering::Relaxed);
            }
            // A failed send is one more lost datagram: QUIC copes.
            let sent = match to {
                Some(to) => socket.send_to(&data, to).await,
                None => socket.send(&data).await,
            };
            if sent.is_ok() {
                shared2.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        };
        if delay.is_zero() {
            go.await;
        } else {
            let task = tokio::spawn(go);
            shared.spawned(task.abort_handle());
        }
    }
}

/// A running fault proxy. Dropping it stops it.
#[derive(Debug)]
pub struct UdpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl UdpProxy {
    /// Starts a proxy on a loopback port, relaying to `upstream`.
    pub async fn start(upstream: SocketAddr, faults: Faults, seed: u64) -> io::Result<UdpProxy> {
        let proxy = UdpProxy::unrouted(faults, seed).await?;
        proxy.set_upstream(upstream);
        Ok(proxy)
    }

    /// Starts a proxy with no server behind it yet (datagrams are lost until
    /// [`UdpProxy::set_upstream`]): for two `serve`s that must each know the
    /// other's proxy before either listens.
    pub async fn unrouted(faults: Faults, seed: u64) -> io::Result<UdpProxy> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            seed,
            faults: Mutex::new(faults),
            upstream: Mutex::new(None),
            cut: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
            cut_at: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            blackholed: AtomicU64::new(0),
            flows: AtomicU64::new(0),
        });
        let task = tokio::spawn(listen_loop(listen, shared.clone()));
        shared.spawned(task.abort_handle());
        Ok(UdpProxy { addr, shared })
    }

    /// The address clients dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed its faults come from.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Sets (or changes, for new flows) the server datagrams go to.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = Some(upstream);
    }

    /// Changes the faults applied from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// The path vanishes: nothing more is forwarded, in either direction,
    /// including datagrams already scheduled.
    pub fn cut(&self) {
        self.shared.cut_now();
    }

    /// The path vanishes once `n` more datagrams (either direction, lost
    /// ones included) have arrived.
    pub fn cut_after(&self, n: u64) {
        self.shared.budget.store(n, Ordering::SeqCst);
    }

    /// The path comes back (and any `cut_after` budget is lifted).
    pub fn heal(&self) {
        self.shared.budget.store(u64::MAX, Ordering::SeqCst);
        self.shared.cut.store(false, Ordering::SeqCst);
        *self.shared.cut_at.lock().unwrap() = None;
    }

    /// When the path was cut, if it is cut.
    pub fn cut_at(&self) -> Option<Instant> {
        *self.shared.cut_at.lock().unwrap()
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            received: s.received.load(Ordering::SeqCst),
            forwarded: s.forwarded.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            duplicated: s.duplicated.load(Ordering::SeqCst),
            reordered: s.reordered.load(Ordering::SeqCst),
            blackholed: s.blackholed.load(Ordering::SeqCst),
            flows: s.flows.load(Ordering::SeqCst),
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shared.cut_now();
        for t in self.shared.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// One client's flow: its socket towards the server and its upward fates.
struct Flow {
    upstream: Arc<UdpSocket>,
    up: Direction,
}

/// Receives from clients, opening a flow per client address, and relays
/// upward; each flow's task relays the server's answers back down.
async fn listen_loop(listen: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match listen.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors (a vanished client) surface here on some systems.
            Err(_) => continue,
        };
        let flow = match flows.entry(client) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(server) = *shared.upstream.lock().unwrap() else {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    shared.blackholed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Ok(flow) = open_flow(&listen, &shared, client, server).await else {
                    continue;
                };
                e.insert(flow)
            }
        };
        flow.up.relay(&shared, &flow.upstream, None, &buf[..n]).await;
    }
}

async fn open_flow(
    listen: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    client: SocketAddr,
    server: SocketAddr,
) -> io::Result<Flow> {
    let bind = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let upstream = Arc::new(UdpSocket::bind(bind).await?);
    upstream.connect(server).await?;
    let number = shared.flows.fetch_add(1, Ordering::SeqCst);
    let mut down = Direction::new(shared.seed, number, false);
    let (listen, from, shared2) = (listen.clone(), upstream.clone(), shared.clone());
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match from.recv(&mut buf).await {
                Ok(n) => down.relay(&shared2, &listen, Some(client), &buf[..n]).await,
                // "Connection refused" from a server not (or no longer)
                // listening: keep the flow, the server may come back.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    shared.spawned(task.abort_handle());
    Ok(Flow {
        upstream,
        up: Direction::new(shared.seed, number, true),
    })
}

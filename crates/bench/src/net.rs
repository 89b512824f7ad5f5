//! Moving the document between two places: duet over QUIC (the engine's own
//! serve and the sync driver), automerge's sync protocol in one process, samod
//! over TCP, and a plain file over TCP.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc};
use duet::{Home, ServeOptions};
use duet_model::DeviceId;
use duet_sync::net::driver::{self, DriveError, Mode, Replica, Report};
use duet_sync::net::tls::{self, ALPN_SYNC, AllowList};
use duet_sync::proto::session::Session;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A home shared between the serve task and the harness.
pub type Shared = Arc<Mutex<Home>>;

/// Locks a shared home.
pub fn lock(home: &Shared) -> Result<std::sync::MutexGuard<'_, Home>> {
    home.lock().map_err(|_| anyhow!("a home's lock was poisoned"))
}

/// `duet::serve` running on loopback.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The TLS server name it shows its key to (the couple's: see
    /// `duet::sni`), for a dialler that holds no space key yet.
    pub name: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<duet::Result<()>>,
}

impl Served {
    /// Starts serving `home` on an ephemeral loopback port.
    pub async fn start(home: Shared) -> Result<Served> {
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse()?,
            peers: Vec::new(),
            poll: Duration::from_millis(100),
            relay: None,
            discovery: false,
        };
        let task = tokio::spawn(duet::serve(home.clone(), opts, stop_rx, Some(ready_tx)));
        let addr = ready.await.context("serve did not start")?;
        let name = lock(&home)?.sync_server_name()?;
        Ok(Served {
            addr,
            name,
            stop,
            task,
        })
    }

    /// Stops serving.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(())
    }
}

/// What one duet sync did.
pub struct DuetSync {
    /// From the first packet of the connection until the dialler holds and
    /// has stored everything and knows the other side does too (its driver
    /// finds the session in sync).
    pub elapsed: Duration,
    /// Until the dialler's driver returned (after its Bye and the peer's close).
    pub closed: Duration,
    /// The dialler's time inside its store: receiving (verify, apply, store)
    /// and generating messages.
    pub local: Duration,
    /// The driver's report (sync frames, messages).
    pub report: Report,
    /// UDP payload bytes both ways (QUIC packets: handshake, headers,
    /// encryption and the sync frames).
    pub udp_bytes: u64,
    /// Packets QUIC declared lost.
    pub lost_packets: u64,
}

/// The dialler's home, timed: the driver calls it for every frame and every
/// message, so it sees when the session is in sync and how long the home
/// itself took.
struct Probe {
    home: Home,
    start: Instant,
    synced: Option<Duration>,
    local: Duration,
}

impl Replica for Probe {
    fn receive(
        &mut self,
        session: &mut Session,
        frame: &duet_sync::proto::frame::Frame,
        now_ms: u64,
    ) -> Result<Vec<duet_sync::proto::session::Event>, DriveError> {
        let t = Instant::now();
        let r = self.home.receive(session, frame, now_ms);
        self.local += t.elapsed();
        r
    }

    fn generate(&mut self, session: &mut Session) -> Result<(), DriveError> {
        let t = Instant::now();
        let r = self.home.generate(session);
        self.local += t.elapsed();
        r
    }

    fn is_synced(&mut self, session: &Session) -> Result<bool, DriveError> {
        let synced = self.home.is_synced(session)?;
        if synced && self.synced.is_none() {
            self.synced = Some(self.start.elapsed());
        }
        Ok(synced)
    }

    fn save_state(&mut self, session: &Session) -> Result<(), DriveError> {
        self.home.save_state(session)
    }
}

/// Dials `addr` from `home` and syncs once, the way `duet sync` does: one
/// QUIC connection, one session, driven by duet's driver. A `joining` home
/// (a new device right after pairing, holding nothing yet) takes the
/// server's word for the space, as pairing's first sync does. `name` is the
/// TLS server name the serve shows its key to ([`Served::name`]).
pub async fn duet_dial(
    mut home: Home,
    addr: SocketAddr,
    name: &str,
    server: DeviceId,
    joining: bool,
) -> Result<(Home, DuetSync)> {
    // The space's id as pairing recorded it (a joining home's document is
    // still empty).
    let space = home.store_mut().meta_get("space_id")?.unwrap_or_default();
    let saved = home.store_mut().sync_state(&server)?;
    let founder = if joining { None } else { Some(home.founder()?) };
    let secret = home.store_mut().device_secret()?;
    let config = tls::client_config(&secret, Arc::new(AllowList::new([server])), ALPN_SYNC)?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let start = Instant::now();
    let probe = Arc::new(Mutex::new(Probe {
        home,
        start,
        synced: None,
        local: Duration::ZERO,
    }));
    let conn = endpoint.connect_with(config, addr, name)?.await?;
    let peer = tls::peer_device(&conn).ok_or_else(|| anyhow!("the server presented no device key"))?;
    let (send, recv) = conn.open_bi().await?;
    let session = if joining {
        Session::joining(peer, &space, 0)
    } else {
        Session::new(
            peer,
            &space,
            founder.ok_or_else(|| anyhow!("no founder pinned"))?,
            saved.as_deref(),
            0,
        )
    };
    let report = driver::drive(session, send, recv, probe.clone(), Mode::OneShot).await?;
    let closed = start.elapsed();
    let stats = conn.stats();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let probe = Arc::try_unwrap(probe)
        .map_err(|_| anyhow!("the driver kept the home"))?
        .into_inner()
        .map_err(|_| anyhow!("a home's lock was poisoned"))?;
    let got = DuetSync {
        elapsed: probe.synced.unwrap_or(closed),
        closed,
        local: probe.local,
        report,
        udp_bytes: stats.udp_tx.bytes + stats.udp_rx.bytes,
        lost_packets: stats.path.lost_packets,
    };
    if std::env::var_os("DUET_BENCH_DEBUG").is_some() {
        eprintln!(
            "duet sync: in sync after {:?}, closed after {:?}, {:?} in the dialler's home, {:?}, udp tx {:?} rx {:?}, lost {} packets, congestion events {}",
            got.elapsed,
            got.closed,
            got.local,
            got.report.stats,
            stats.udp_tx,
            stats.udp_rx,
            stats.path.lost_packets,
            stats.path.congestion_events,
        );
    }
    Ok((probe.home, got))
}

/// What automerge's own sync protocol did between two documents in memory.
pub struct InProcess {
    /// How long it took (generating, encoding, decoding, applying).
    pub elapsed: Duration,
    /// Encoded message bytes, both ways.
    pub bytes: usize,
    /// Messages, both ways; each answers the one before, so each is one
    /// network leg.
    pub messages: usize,
}

/// Syncs `a` and `b` with automerge's protocol, the loop of its own
/// documentation: `a` sends, `b` receives and answers, and so on until
/// neither has anything to send. Messages are encoded and decoded, as they
/// would be on a network.
pub fn automerge_sync(
    a: &mut Automerge,
    b: &mut Automerge,
    sa: &mut sync::State,
    sb: &mut sync::State,
) -> Result<InProcess> {
    let start = Instant::now();
    let (mut bytes, mut messages) = (0, 0);
    loop {
        let mut sent = false;
        if let Some(m) = a.generate_sync_message(sa) {
            let m = m.encode();
            bytes += m.len();
            messages += 1;
            sent = true;
            b.receive_sync_message(sb, sync::Message::decode(&m)?)?;
        }
        if let Some(m) = b.generate_sync_message(sb) {
            let m = m.encode();
            bytes += m.len();
            messages += 1;
            sent = true;
            a.receive_sync_message(sa, sync::Message::decode(&m)?)?;
        }
        if !sent {
            break;
        }
        if messages > 200 {
            bail!("automerge's sync did not converge");
        }
    }
    Ok(InProcess {
        elapsed: start.elapsed(),
        bytes,
        messages,
    })
}

/// Byte and frame counts of one side of a samod TCP connection.
#[derive(Default)]
pub struct Counter {
    /// Bytes this side wrote.
    pub written: AtomicU64,
    /// Bytes this side read.
    pub read: AtomicU64,
    /// Length-delimited frames (samod messages) this side wrote.
    pub frames_written: AtomicU64,
}

impl Counter {
    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed) + self.read.load(Ordering::Relaxed)
    }

    /// Zeroes the counts.
    pub fn reset(&self) {
        self.written.store(0, Ordering::Relaxed);
        self.read.store(0, Ordering::Relaxed);
        self.frames_written.store(0, Ordering::Relaxed);
    }
}

/// A TCP stream that counts what goes through it, and the frames of samod's
/// length-delimited codec (a 4-byte big-endian length, then the message).
struct Counted {
    io: TcpStream,
    counter: Arc<Counter>,
    header: [u8; 4],
    header_len: usize,
    payload_left: u64,
}

impl Counted {
    fn new(io: TcpStream, counter: Arc<Counter>) -> Counted {
        let _ = io.set_nodelay(true);
        Counted {
            io,
            counter,
            header: [0; 4],
            header_len: 0,
            payload_left: 0,
        }
    }

    fn frames(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let k = (self.payload_left as usize).min(data.len());
                self.payload_left -= k as u64;
                data = &data[k..];
                if self.payload_left == 0 {
                    self.counter.frames_written.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            data = &data[1..];
            if self.header_len == 4 {
                self.header_len = 0;
                self.payload_left = u64::from(u32::from_be_bytes(self.header));
                if self.payload_left == 0 {
                    self.counter.frames_written.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counter.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let n = *n;
            self.counter.written.fetch_add(n as u64, Ordering::Relaxed);
            self.frames(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Dials a samod acceptor over TCP, counting what it moves.
struct CountingDialer {
    addr: SocketAddr,
    counter: Arc<Counter>,
}

impl samod::Dialer for CountingDialer {
    type Error = std::io::Error;

    fn url(&self) -> samod::Url {
        samod::Url::parse(&format!("tcp://{}", self.addr))
            .unwrap_or_else(|_| unreachable!("a socket address makes a valid URL"))
    }

    fn connect(
        &self,
    ) -> futures::future::BoxFuture<'static, Result<samod::Transport, samod::DialError<Self::Error>>> {
        let (addr, counter) = (self.addr, self.counter.clone());
        async move {
            let io = TcpStream::connect(addr)
                .await
                .map_err(samod::DialError::transient)?;
            Ok(samod::Transport::from_tokio_io(Counted::new(io, counter)))
        }
        .boxed()
    }
}

/// A samod repo with on-disk storage, listening on TCP loopback.
pub struct SamodPeer {
    /// The repo.
    pub repo: samod::Repo,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Counts of the accepting side of its connections.
    pub accepted: Arc<Counter>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl SamodPeer {
    /// A repo storing its documents in `dir`, accepting on loopback.
    pub async fn start(dir: &std::path::Path) -> Result<SamodPeer> {
        let repo = samod::Repo::build_tokio()
            .with_storage(samod::storage::TokioFilesystemStorage::new(dir))
            .load()
            .await;
        let acceptor = repo
            .make_acceptor(samod::Url::parse("tcp://bench-acceptor")?)
            .map_err(|e| anyhow!("samod stopped: {e:?}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(Counter::default());
        let counter = accepted.clone();
        let accept_task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let transport = samod::Transport::from_tokio_io(Counted::new(io, counter.clone()));
                if acceptor.accept(transport).is_err() {
                    return;
                }
            }
        });
        Ok(SamodPeer {
            repo,
            addr,
            accepted,
            accept_task,
        })
    }

    /// Dials `other`, counting this side's bytes in `counter`; returns once
    /// the handshake is done.
    pub async fn dial(
        &self,
        other: SocketAddr,
        counter: Arc<Counter>,
    ) -> Result<samod::DialerHandle<std::io::Error>> {
        let dialer = self
            .repo
            .dial(
                samod::BackoffConfig::default(),
                Arc::new(CountingDialer { addr: other, counter }),
            )
            .map_err(|e| anyhow!("samod stopped: {e:?}"))?;
        dialer
            .established()
            .await
            .map_err(|e| anyhow!("samod could not connect: {e:?}"))?;
        Ok(dialer)
    }

    /// Stops the repo.
    pub async fn stop(self) {
        self.accept_task.abort();
        self.repo.stop().await;
    }
}

/// Waits until `handle`'s document holds every change in `heads`.
pub async fn samod_wait_for(handle: &samod::DocHandle, heads: &[ChangeHash], limit: Duration) -> Result<()> {
    let mut changes = handle.changes();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let done = handle.with_document(|d| heads.iter().all(|h| d.get_change_by_hash(h).is_some()));
        if done {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("samod's change stream ended"),
            Err(_) => bail!("samod did not deliver the changes within {limit:?}"),
        }
    }
}

/// Serves `file`'s bytes to every TCP connection (8-byte length, then the
/// bytes), read from disk for each.
pub async fn file_server(file: std::path::PathBuf) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            let _ = io.set_nodelay(true);
            let Ok(bytes) = tokio::fs::read(&file).await else {
                return;
            };
            let _ = io.write_all(&(bytes.len() as u64).to_be_bytes()).await;
            let _ = io.write_all(&bytes).await;
            let _ = io.shutdown().await;
        }
    });
    Ok((addr, task))
}

/// Fetches the file from a [`file_server`] and loads it; returns the document
/// and the bytes received.
pub async fn fetch_and_load(addr: SocketAddr) -> Result<(Automerge, usize)> {
    let mut io = TcpStream::connect(addr).await?;
    let _ = io.set_nodelay(true);
    let mut len = [0u8; 8];
    io.read_exact(&mut len).await?;
    let mut bytes = vec![0u8; usize::try_from(u64::from_be_bytes(len))?];
    io.read_exact(&mut bytes).await?;
    let doc = Automerge::load(&bytes)?;
    Ok((doc, bytes.len() + 8))
}

//! Pairing: how a partner's first device (or another device of the host's own
//! person) joins the space.
//!
//! The host chooses whose device it pairs ([`WhoseDevice`]), binds, prints a
//! short code and its address, and waits for one connection. TLS accepts any
//! device key here (ALPN `duet-pair/2`); the SPAKE2 exchange over the
//! connection, bound to that TLS session, is what proves the two devices share
//! the code. Then both show the same phrase, and the host waits
//! ([`PendingJoin`]) for its person to confirm that the other screen shows it.
//! Only then does the host add the joiner's device to the space (a signed
//! change like any other, in the seat the host chose) and let it in; the joiner
//! syncs the whole space on a second stream. A joiner that had written entries
//! in a space of its own brings them along: they are copied into the shared
//! space, with their ids and times, and synced back on a third stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_model::{
    CheckInEntry, Editor, IssueStatus, ModelError, NewIssue, Outcome, Owner, Rating, Seat, space,
};
use duet_sync::net::driver::{self, Mode};
use duet_sync::net::tls::{self, ALPN_PAIR, AnyDevice};
use duet_sync::proto::frame::{Frame, FrameDecoder};
use duet_sync::proto::pairing::{
    JoinAccept, JoinRequest, JoinRequested, JoinerEvent, PairingCode, PairingError, PairingHost,
    PairingJoiner,
};
use duet_sync::proto::session::Session;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::export::Export;
use crate::home::Home;
use crate::sync::{CONNECT_TIMEOUT, SyncReport, lock};

/// How long `pair host` waits for the other device.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(300);

/// The label of the TLS exporter that binds the PAKE to the TLS session.
const BINDING_LABEL: &[u8] = b"duet pairing channel binding v1";

/// The private key under which a joining home keeps its previous space until
/// its entries are copied into the shared one.
const PENDING_IMPORT: &str = "pending_import";

/// What the joiner says when no answer came while the phrase was compared.
const NOT_CONFIRMED: &str = "the other device did not confirm the phrase (no answer, or the connection dropped): \
     this device did not join; start again with a new code";

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Result<Vec<u8>> {
    let bad = || Error::Inconsistent {
        path: String::new(),
        detail: "the entries kept for pairing are damaged".into(),
    };
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// How a pairing ended, on either side.
#[derive(Debug, Clone, Serialize)]
pub struct PairOutcome {
    /// The other device.
    pub peer: duet_model::DeviceId,
    /// The phrase both devices show, for the people to compare.
    pub phrase: String,
    /// The seat of the device that joined.
    pub seat: Seat,
    /// The joiner's device name.
    pub device_name: String,
    /// What the first sync moved (seen from this side).
    pub sync: Option<SyncReport>,
    /// Entries the joiner brought from its own space (joiner side).
    pub imported: usize,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

/// A fresh pairing code.
pub fn new_code() -> Result<PairingCode> {
    Ok(PairingCode::from_random(random()?))
}

fn binding(conn: &quinn::Connection) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, BINDING_LABEL, b"")
        .map_err(|_| Error::Net("cannot bind pairing to the TLS session".into()))?;
    Ok(out)
}

fn net(e: impl std::fmt::Display) -> Error {
    Error::Net(e.to_string())
}

async fn send_all(send: &mut quinn::SendStream, mut next: impl FnMut() -> Option<Vec<u8>>) -> Result<()> {
    while let Some(bytes) = next() {
        send.write_all(&bytes).await.map_err(net)?;
    }
    Ok(())
}

/// Finishes the stream and waits (briefly) until the peer has received it.
async fn finish_and_wait(send: &mut quinn::SendStream) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(3), send.stopped()).await;
    }
}

async fn next_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    wait: Duration,
) -> Result<Frame> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = decoder.next_frame().map_err(net)? {
            return Ok(f);
        }
        let read = tokio::time::timeout(wait, recv.read(&mut buf))
            .await
            .map_err(|_| Error::Net("the other device stopped responding during pairing".into()))?
            .map_err(net)?;
        match read {
            Some(n) => decoder.push(&buf[..n]),
            None => {
                return Err(Error::Net(
                    "the other device closed the connection during pairing".into(),
                ));
            }
        }
    }
}

/// Whose device the host pairs: the host chooses, the joiner cannot ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhoseDevice {
    /// The partner's first device: the seat of the other person.
    Partner,
    /// Another device of the host's own person: the host's seat.
    Mine,
}

/// A host waiting for one device to pair.
#[derive(Debug)]
pub struct PairHost {
    endpoint: quinn::Endpoint,
    code: PairingCode,
    home: Arc<Mutex<Home>>,
    whose: WhoseDevice,
}

impl PairHost {
    /// Binds `listen` with a new code (or `code`), to pair a device of `whose`.
    ///
    /// A device joins a seat only through a device of that seat: the host may
    /// pair its own person's devices, and the partner's *first* device. Once
    /// the partner has an active device, their next one pairs from one of
    /// theirs, so pairing it here is refused before any code is shown.
    pub fn bind(
        home: Arc<Mutex<Home>>,
        listen: SocketAddr,
        code: Option<PairingCode>,
        whose: WhoseDevice,
    ) -> Result<PairHost> {
        let secret = {
            let mut h = lock(&home)?;
            h.may_pair(whose)?;
            h.store_mut().device_secret()?
        };
        let code = match code {
            Some(c) => c,
            None => new_code()?,
        };
        let config = tls::server_config(&secret, Arc::new(AnyDevice), &[ALPN_PAIR]).map_err(net)?;
        let endpoint = quinn::Endpoint::server(config, listen)
            .map_err(|e| net(format!("cannot listen on {listen}: {e}")))?;
        Ok(PairHost {
            endpoint,
            code,
            home,
            whose,
        })
    }

    /// The code to tell the other device.
    pub fn code(&self) -> &PairingCode {
        &self.code
    }

    /// The address the host listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint.local_addr().map_err(net)
    }

    /// Waits (up to `timeout`) for one device that proves it knows the code
    /// over its connection, and returns it, waiting for the host's person to
    /// compare the phrase. Nothing is recorded yet. The code is spent whatever
    /// happens.
    pub async fn wait(self, timeout: Duration) -> Result<PendingJoin> {
        let result = tokio::time::timeout(timeout, self.wait_inner())
            .await
            .unwrap_or_else(|_| {
                Err(Error::Net(format!(
                    "no device paired within {} seconds",
                    timeout.as_secs()
                )))
            });
        match result {
            Ok(pending) => Ok(pending),
            Err(e) => {
                self.endpoint.close(0u32.into(), b"pairing over");
                self.endpoint.wait_idle().await;
                Err(e)
            }
        }
    }

    async fn wait_inner(&self) -> Result<PendingJoin> {
        let incoming = self
            .endpoint
            .accept()
            .await
            .ok_or_else(|| Error::Net("the pairing endpoint closed".into()))?;
        let conn = incoming.await.map_err(|e| {
            if tls::is_alpn_refusal(&e) {
                net(OTHER_VERSION_JOINER)
            } else {
                net(e)
            }
        })?;
        let peer = tls::peer_device(&conn).ok_or_else(|| net("the other device presented no key"))?;
        let (mut send, mut recv) = conn.accept_bi().await.map_err(net)?;
        let (me, space_id, seat) = {
            let mut h = lock(&self.home)?;
            let seat = match self.whose {
                WhoseDevice::Mine => h.seat(),
                WhoseDevice::Partner => h.seat().other(),
            };
            (h.device_id(), h.space_id()?, seat)
        };
        let mut host = PairingHost::new(&self.code, me, peer, binding(&conn)?, random()?);
        let mut decoder = FrameDecoder::new();
        let requested = loop {
            // A peer that stopped reading may have sent an Abort: read on to find it.
            if let Err(e) = send_all(&mut send, || host.poll_transmit()).await {
                tracing::debug!(error = %e, "pairing peer stopped reading");
            }
            let frame = next_frame(&mut recv, &mut decoder, READ_TIMEOUT).await?;
            match host.handle(&frame) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    // Deliver the Abort before closing, so both sides name the cause.
                    if let Err(e) = send_all(&mut send, || host.poll_transmit()).await {
                        tracing::debug!(error = %e, "pairing peer stopped reading");
                    }
                    finish_and_wait(&mut send).await;
                    return Err(e.into());
                }
            }
        };
        Ok(PendingJoin {
            endpoint: self.endpoint.clone(),
            conn,
            send,
            host,
            requested,
            seat,
            whose: self.whose,
            space_id,
            home: self.home.clone(),
            asked_at: Instant::now(),
        })
    }
}

/// What a host says when a device of another duet version tried to pair.
const OTHER_VERSION_JOINER: &str = "a device running another version of duet tried to pair: \
     update duet on both devices and start again";
/// What a joiner says when the host runs another duet version.
const OTHER_VERSION_HOST: &str = "the other device runs another version of duet, which pairs \
     differently: update duet on both devices and start again";

/// How long one step of the exchange may wait for the other device.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the host's person has to compare the phrase and answer. The joiner
/// waits this long and a little more; [`PendingJoin::admit`] after it turns the
/// joiner away instead.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

/// A device that knows the code, waiting for the host's person to compare the
/// phrase on both screens. Nothing is recorded and nothing is granted until
/// [`admit`](Self::admit); [`reject`](Self::reject) (or dropping it) turns the
/// device away. Show [`phrase`](Self::phrase) with the joiner's names and ask
/// whether the other screen shows the same words: the phrase is what tells the
/// host's person that the device at the other end is the one they mean.
pub struct PendingJoin {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    host: PairingHost,
    requested: JoinRequested,
    seat: Seat,
    whose: WhoseDevice,
    space_id: String,
    home: Arc<Mutex<Home>>,
    asked_at: Instant,
}

impl std::fmt::Debug for PendingJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingJoin")
            .field("peer", &self.requested.peer)
            .field("request", &self.requested.request)
            .field("seat", &self.seat)
            .finish_non_exhaustive()
    }
}

impl PendingJoin {
    /// The four words both screens show.
    pub fn phrase(&self) -> &str {
        &self.requested.phrase
    }

    /// The person's name, as the joining device gives it (unverified: the
    /// phrase is the check).
    pub fn name(&self) -> &str {
        &self.requested.request.name
    }

    /// The joining device's name, as it gives it.
    pub fn device_name(&self) -> &str {
        &self.requested.request.device_name
    }

    /// The joining device's key.
    pub fn peer(&self) -> duet_model::DeviceId {
        self.requested.peer
    }

    /// The seat it will take: the host's choice.
    pub fn seat(&self) -> Seat {
        self.seat
    }

    /// Whose device it will be.
    pub fn whose(&self) -> WhoseDevice {
        self.whose
    }

    /// Completes when the joining device gives up (it closed the connection):
    /// an app may race it against its question.
    pub async fn cancelled(&self) {
        self.conn.closed().await;
    }

    /// The host's person confirmed the phrase: records the device in the
    /// space, lets it in, and serves its first sync.
    pub async fn admit(mut self) -> Result<PairOutcome> {
        let result = self.admit_inner().await;
        self.close().await;
        result
    }

    async fn admit_inner(&mut self) -> Result<PairOutcome> {
        if self.asked_at.elapsed() > CONFIRM_TIMEOUT {
            self.turn_away("the phrase was not confirmed in time").await;
            return Err(net(format!(
                "the phrase was confirmed after {} seconds, when the other device had stopped waiting: \
                 nothing was recorded; start again",
                CONFIRM_TIMEOUT.as_secs()
            )));
        }
        if self.conn.close_reason().is_some() {
            return Err(net(GAVE_UP));
        }
        let (peer, seat) = (self.requested.peer, self.seat);
        let added = {
            let mut h = lock(&self.home)?;
            // The space may have changed while the person looked (a sync).
            h.may_pair(self.whose)
                .and_then(|()| h.admit(peer, seat, self.whose, &self.requested.request))
        };
        if let Err(e) = added {
            self.turn_away("the host could not record this device").await;
            return Err(e);
        }
        let paired = self.host.accept(JoinAccept {
            space_id: self.space_id.clone(),
            seat: seat.as_str().to_string(),
        })?;
        send_all(&mut self.send, || self.host.poll_transmit()).await?;
        let _ = self.send.finish();
        // Serve the joiner's syncs (the whole space, then what it brings) until
        // it closes the connection.
        let mut last = None;
        while let Ok((send, recv)) = self.conn.accept_bi().await {
            let session = lock(&self.home)?.session_with(peer)?;
            let report = driver::drive(session, send, recv, self.home.clone(), Mode::Answer).await?;
            last = Some(report.into());
        }
        Ok(PairOutcome {
            peer,
            phrase: paired.phrase,
            seat,
            device_name: paired.request.device_name,
            sync: last,
            imported: 0,
        })
    }

    /// The phrase was not confirmed (or the person said no): turns the device
    /// away with `reason`, recording nothing.
    pub async fn reject(mut self, reason: &str) -> Result<()> {
        self.turn_away(reason).await;
        self.close().await;
        Ok(())
    }

    async fn turn_away(&mut self, reason: &str) {
        if self.host.reject(reason).is_ok()
            && send_all(&mut self.send, || self.host.poll_transmit())
                .await
                .is_ok()
        {
            finish_and_wait(&mut self.send).await;
        }
    }

    async fn close(&self) {
        self.conn.close(0u32.into(), b"pairing over");
        self.endpoint.close(0u32.into(), b"pairing over");
        self.endpoint.wait_idle().await;
    }
}

const GAVE_UP: &str = "the other device gave up before the phrase was confirmed: nothing was recorded";

impl Home {
    /// Refuses to pair a partner's device when the partner already has one: a
    /// device joins a seat only through a device of that seat.
    fn may_pair(&mut self, whose: WhoseDevice) -> Result<()> {
        if whose == WhoseDevice::Mine {
            return Ok(());
        }
        let partner = self.seat().other();
        let name = self.read(|doc| space::person(doc, partner).name)?;
        if self.membership()?.seat_is_held(partner) {
            return Err(ModelError::Refused(format!(
                "{name} already has a device in this space: {name}'s new devices pair from one of \
                 {name}'s own devices (run `duet pair host --own-device` there)"
            ))
            .into());
        }
        Ok(())
    }

    /// Records a newly paired device in the space (and its person's name, for a
    /// partner joining for the first time).
    fn admit(
        &mut self,
        device: duet_model::DeviceId,
        seat: Seat,
        whose: WhoseDevice,
        request: &JoinRequest,
    ) -> Result<()> {
        let needs_name =
            whose == WhoseDevice::Partner && self.read(|doc| space::partner_name(doc, seat).is_none())?;
        self.edit(|e| {
            e.add_device(device, seat, &request.device_name)?;
            if needs_name {
                e.set_partner_name(seat, &request.name)?;
            }
            Ok(())
        })?;
        // The new device gets an envelope for every space key: it can read
        // bundles from the start.
        self.ensure_space_keys().map(|_| ())
    }
}

/// Joins the space of the host at `addr` with `code`, in the seat the host
/// chooses (its partner's, or its own person's for another of their devices).
/// Once the host is confirmed, `show_phrase` gets the phrase: show it, for the
/// host's person to compare, while this waits for their answer (up to a little
/// over [`CONFIRM_TIMEOUT`]). The home's own entries come along into the shared
/// space.
pub async fn pair_join(
    home: Arc<Mutex<Home>>,
    code: &str,
    addr: SocketAddr,
    show_phrase: impl FnOnce(&str) + Send,
) -> Result<PairOutcome> {
    let code: PairingCode = code
        .parse()
        .map_err(|e| Error::Model(ModelError::Refused(format!("invalid pairing code: {e}"))))?;
    let (secret, request) = {
        let mut h = lock(&home)?;
        let members = h.membership()?;
        let pending = h.store_mut().private_get(PENDING_IMPORT)?.is_some();
        if members.members().len() > 1 && !pending {
            return Err(ModelError::Refused(
                "this home already shares its space with other devices; use a new home to join another space"
                    .into(),
            )
            .into());
        }
        let seat = h.seat();
        let name = h.read(|doc| space::person(doc, seat).name)?;
        let device_name = h.store_mut().device_name()?;
        (h.store_mut().device_secret()?, JoinRequest { name, device_name })
    };
    let config = tls::client_config(&secret, Arc::new(AnyDevice), ALPN_PAIR).map_err(net)?;
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(net)?;
    let endpoint = quinn::Endpoint::client(bind).map_err(net)?;
    let connecting = endpoint
        .connect_with(config, addr, tls::SERVER_NAME)
        .map_err(net)?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| net(format!("no answer from {addr}")))?
        .map_err(|e| {
            if tls::is_alpn_refusal(&e) {
                net(OTHER_VERSION_HOST)
            } else {
                net(format!("cannot connect to {addr}: {e}"))
            }
        })?;
    let result = join_on(&conn, home, code, request, secret.device_id(), show_phrase).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    result
}

async fn join_on(
    conn: &quinn::Connection,
    home: Arc<Mutex<Home>>,
    code: PairingCode,
    request: JoinRequest,
    me: duet_model::DeviceId,
    show_phrase: impl FnOnce(&str),
) -> Result<PairOutcome> {
    let peer = tls::peer_device(conn).ok_or_else(|| net("the other device presented no key"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(net)?;
    let mut joiner = PairingJoiner::new(&code, me, peer, binding(conn)?, request, random()?)?;
    let mut decoder = FrameDecoder::new();
    let mut show_phrase = Some(show_phrase);
    let paired = loop {
        // A peer that stopped reading may have sent an Abort: read on to find it.
        if let Err(e) = send_all(&mut send, || joiner.poll_transmit()).await {
            tracing::debug!(error = %e, "pairing peer stopped reading");
        }
        // Once the phrase is shown, a person on the other side is comparing it.
        let wait = match show_phrase {
            Some(_) => READ_TIMEOUT,
            None => CONFIRM_TIMEOUT + READ_TIMEOUT,
        };
        let frame = next_frame(&mut recv, &mut decoder, wait)
            .await
            .map_err(|e| match (&show_phrase, e) {
                (None, Error::Net(_)) => net(NOT_CONFIRMED),
                (_, e) => e,
            })?;
        match joiner.handle(&frame) {
            Ok(Some(JoinerEvent::Paired(p))) => break p,
            Ok(Some(JoinerEvent::Confirmed { phrase })) => {
                // Send the request before showing the phrase: the host asks as soon as it arrives.
                if let Err(e) = send_all(&mut send, || joiner.poll_transmit()).await {
                    tracing::debug!(error = %e, "pairing peer stopped reading");
                }
                if let Some(show) = show_phrase.take() {
                    show(&phrase);
                }
            }
            Ok(None) => {}
            Err(e) => {
                // A peer that stopped reading may have sent an Abort: read on to find it.
                if let Err(e) = send_all(&mut send, || joiner.poll_transmit()).await {
                    tracing::debug!(error = %e, "pairing peer stopped reading");
                }
                finish_and_wait(&mut send).await;
                return Err(e.into());
            }
        }
    };
    let _ = send.finish();
    let seat: Seat = paired
        .accept
        .seat
        .parse()
        .map_err(|_| Error::Pairing(PairingError::Malformed("seat")))?;
    // Keep what this home held (stashed first, so a crash from here on loses
    // nothing: the next attempt picks the stash up), then take on the space.
    let old = {
        let mut h = lock(&home)?;
        let old = match h.store_mut().private_get(PENDING_IMPORT)? {
            Some(hex) => decode_hex(&hex)?,
            None => {
                let bytes = h.read(|d| d.save())?;
                h.store_mut()
                    .private_set(PENDING_IMPORT, Some(&encode_hex(&bytes)))?;
                bytes
            }
        };
        h.adopt_space(&paired.accept.space_id, seat)?;
        automerge::Automerge::load(&old).map_err(|e| Error::Inconsistent {
            path: h.dir().display().to_string(),
            detail: format!("the entries kept for pairing do not load: {e}"),
        })?
    };
    let (send, recv) = conn.open_bi().await.map_err(net)?;
    let session = Session::joining(peer, &paired.accept.space_id, 0);
    let report = driver::drive(session, send, recv, home.clone(), Mode::OneShot).await?;
    let imported = {
        let mut h = lock(&home)?;
        let n = h.import(&old)?;
        h.store_mut().private_set(PENDING_IMPORT, None)?;
        n
    };
    let mut sync: SyncReport = report.into();
    if imported > 0 {
        let (send, recv) = conn.open_bi().await.map_err(net)?;
        let session = lock(&home)?.session_with(peer)?;
        let second = driver::drive(session, send, recv, home.clone(), Mode::OneShot).await?;
        sync.messages_out += second.stats.messages_out;
        sync.bytes_out += second.stats.bytes_out;
    }
    lock(&home)?
        .store_mut()
        .set_peer_address(&peer, &conn.remote_address().to_string())?;
    Ok(PairOutcome {
        peer,
        phrase: paired.phrase,
        seat,
        device_name: paired.request.device_name,
        sync: Some(sync),
        imported,
    })
}

impl Home {
    /// Copies the entries of an export of this home's previous space into the
    /// current one, as this device's person, keeping ids and times. Returns how
    /// many entries were copied.
    pub(crate) fn import(&mut self, old_doc: &automerge::Automerge) -> Result<usize> {
        let old = Export::of(old_doc);
        let seat = self.seat();
        // In its own space the joiner sat in seat a, and "partner" was seat b.
        let remap = |s: Seat| if s == Seat::A { seat } else { seat.other() };
        let mut count = 0usize;
        self.store_mut().write(|doc| -> Result<()> {
            for i in &old.issues {
                let new = NewIssue {
                    title: i.title.clone(),
                    body: i.body.clone(),
                    kind: Some(i.kind),
                    startup: i.startup.clone().unwrap_or_default(),
                    tags: i.tags.clone(),
                };
                Editor::new(doc, seat, i.created_at.0).add_issue(&i.id, &new)?;
                count += 1;
                if i.status != IssueStatus::Open {
                    Editor::new(doc, seat, i.created_at.0).set_status(&i.id, i.status)?;
                }
                for st in &i.steps {
                    let owner = match st.owner {
                        Owner::Both => Owner::Both,
                        Owner::One(s) => Owner::One(remap(s)),
                    };
                    Editor::new(doc, seat, st.created_at.0).add_step(
                        &i.id,
                        &st.id,
                        &st.text,
                        owner,
                        st.due.as_deref(),
                    )?;
                    if st.done {
                        let when = st.done_at.map_or(st.created_at.0, |m| m.0);
                        Editor::new(doc, seat, when).complete_step(
                            &(i.id.clone(), st.id.clone()),
                            st.outcome.unwrap_or(Outcome::Kept),
                        )?;
                    }
                    count += 1;
                }
                for n in &i.notes {
                    Editor::new(doc, seat, n.at.0).add_note(&i.id, &n.text)?;
                    count += 1;
                }
            }
            for a in &old.agreements {
                Editor::new(doc, seat, a.created_at.0).add_agreement(&a.id, &a.text, a.kind)?;
                count += 1;
            }
            for c in &old.checkins {
                for p in c.partners.iter().filter(|p| p.partner.seat == Some(Seat::A)) {
                    let mut entries: Vec<CheckInEntry> = Vec::new();
                    entries.extend(p.appreciations.iter().cloned().map(CheckInEntry::Appreciation));
                    entries.extend(p.went_well.iter().cloned().map(CheckInEntry::WentWell));
                    entries.extend(p.agenda.iter().map(|a| CheckInEntry::Agenda(a.issue_id.clone())));
                    entries.extend(p.request.clone().map(CheckInEntry::Request));
                    entries.extend(
                        p.rating
                            .and_then(|r| Rating::new(i64::from(r)).ok())
                            .map(CheckInEntry::Rating),
                    );
                    entries.extend(p.time.iter().map(|t| CheckInEntry::Time(t.kind, t.minutes)));
                    let when = c
                        .week
                        .monday()
                        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                        .map_or(0, |z| z.timestamp().as_millisecond());
                    for e in &entries {
                        Editor::new(doc, seat, when).checkin(c.week, e)?;
                        count += 1;
                    }
                }
            }
            Ok(())
        })?;
        Ok(count)
    }
}

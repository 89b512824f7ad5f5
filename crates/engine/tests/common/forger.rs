//! An attacker built from the sync library: a document in memory that sends
//! whatever changes and signatures it is given, dialling a victim's `serve`
//! over real QUIC.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use duet::model::{Attestation, DeviceId, DeviceSecret};
use duet_sync::net::driver::{self, DriveError, Mode, Replica, Report};
use duet_sync::net::tls::{self, ALPN_SYNC, AllowList};
use duet_sync::proto::frame::Frame;
use duet_sync::proto::session::{Event, Session};

use super::{loopback, server_name};

/// Dials `addr` as the device `secret` (accepting the servers in `allowed`) and
/// drives a session made by `session` through `replica`, like `sync_once` does.
pub async fn dial<R: Replica>(
    secret: &DeviceSecret,
    allowed: Vec<DeviceId>,
    addr: SocketAddr,
    replica: Arc<Mutex<R>>,
    session: impl FnOnce(DeviceId) -> Session,
) -> Result<Report, DriveError> {
    let config = tls::client_config(secret, Arc::new(AllowList::new(allowed)), ALPN_SYNC).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let conn = endpoint
        .connect_with(config, addr, &server_name(addr))
        .unwrap()
        .await
        .map_err(|e| DriveError::Connection(e.to_string()))?;
    let peer = tls::peer_device(&conn).expect("the server presented a device key");
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| DriveError::Connection(e.to_string()))?;
    let report = driver::drive(session(peer), send, recv, replica, Mode::OneShot).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    report
}

/// A replica that is only an automerge document in memory and a list of
/// attestations to send (what an attacker with the library can build); it
/// records every frame it receives.
pub struct InMemory {
    /// The attacker's document.
    pub doc: Automerge,
    /// What it sends to vouch for its changes.
    pub attestations: Vec<Attestation>,
    /// Every frame it received.
    pub frames: Vec<Frame>,
}

impl Replica for InMemory {
    fn receive(
        &mut self,
        session: &mut Session,
        frame: &Frame,
        now_ms: u64,
    ) -> Result<Vec<Event>, DriveError> {
        self.frames.push(frame.clone());
        let actor = self.doc.get_actor().clone();
        let mut working = self.doc.fork().with_actor(actor);
        let events = session.handle(frame, &mut working, now_ms)?;
        self.doc = working;
        Ok(events)
    }

    fn generate(&mut self, session: &mut Session) -> Result<(), DriveError> {
        session.generate(&self.doc, &self.attestations);
        Ok(())
    }

    fn is_synced(&mut self, session: &Session) -> Result<bool, DriveError> {
        Ok(session.is_synced(&self.doc))
    }

    fn save_state(&mut self, _session: &Session) -> Result<(), DriveError> {
        Ok(())
    }
}

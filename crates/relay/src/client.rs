//! A device's connection to a relay.
//!
//! The device presents its own key (the relay authorizes requests by it) and
//! accepts any relay key: the relay is not trusted with anything, since
//! bundles are sealed and signed by the couple's devices. What the relay
//! answers is still checked: an access list must verify and be for the space
//! asked about, fetched bundles must come after the point asked from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duet_model::{DeviceId, DeviceSecret};
use duet_sync::net::tls::{self, ALPN_RELAY, AnyDevice};
use duet_sync::proto::relay::{MAX_WAIT_MS, Request, Response, SignedAccess, SpaceTag};

use crate::error::RelayError;
use crate::io::{self, READ_TIMEOUT, ReadFail};

/// What a relay's refusal of a connection (before its handshake) means: it
/// does not say which of its limits it hit.
pub const CONNECTION_REFUSED: &str = "the relay turned the connection away: this address holds too many \
     connections to it or opened them too often, or the relay is at its connection limit; try again in a minute";

/// How long to wait for a relay to answer a connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a relay. Requests may run concurrently (each has its own
/// stream).
#[derive(Debug)]
pub struct RelayClient {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    addr: SocketAddr,
}

fn net(e: impl std::fmt::Display) -> RelayError {
    RelayError::Net(e.to_string())
}

impl RelayClient {
    /// Connects to the relay at `addr` as the device `secret`.
    pub async fn connect(addr: SocketAddr, secret: &DeviceSecret) -> Result<RelayClient, RelayError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        RelayClient::connect_from(bind, addr, secret).await
    }

    /// Connects to the relay at `addr` as the device `secret`, from the
    /// local address `bind` (on a host with several).
    pub async fn connect_from(
        bind: SocketAddr,
        addr: SocketAddr,
        secret: &DeviceSecret,
    ) -> Result<RelayClient, RelayError> {
        let config = tls::client_config(secret, Arc::new(AnyDevice), ALPN_RELAY)?;
        let endpoint =
            quinn::Endpoint::client(bind).map_err(|e| net(format!("cannot open a UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(config, addr, tls::SERVER_NAME)
            .map_err(|e| net(format!("cannot connect to the relay at {addr}: {e}")))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(quinn::ConnectionError::ConnectionClosed(c)))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                return Err(RelayError::Refused(CONNECTION_REFUSED.into()));
            }
            Ok(Err(e)) => {
                return Err(net(format!(
                    "cannot connect to the relay at {addr}: {}",
                    duet_sync::net::driver::connection_error(&e)
                )));
            }
            Err(_) => {
                return Err(net(format!(
                    "no answer from the relay at {addr} within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(RelayClient { endpoint, conn, addr })
    }

    /// The relay's own key, as its handshake proved it.
    pub fn relay_key(&self) -> Option<DeviceId> {
        tls::peer_device(&self.conn)
    }

    /// Sends one request and reads the answer. A refusal comes back as
    /// [`Response::Failure`]; the typed methods below turn it into
    /// [`RelayError::Refused`].
    pub async fn request(&self, req: &Request) -> Result<Response, RelayError> {
        let bytes = req.encode().map_err(|e| RelayError::Request(e.to_string()))?;
        let wait = match req {
            Request::Fetch { wait_ms, .. } => Duration::from_millis(u64::from((*wait_ms).min(MAX_WAIT_MS))),
            _ => Duration::ZERO,
        };
        self.exchange(&bytes, wait).await
    }

    async fn exchange(&self, bytes: &[u8], wait: Duration) -> Result<Response, RelayError> {
        let addr = self.addr;
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| {
            net(format!(
                "lost the relay at {addr}: {}",
                duet_sync::net::driver::connection_error(&e)
            ))
        })?;
        // A relay may refuse a post from its first bytes and stop reading:
        // its answer is still worth reading when the write fails.
        let wrote = io::write_and_finish(&mut send, bytes).await;
        let frame = match io::read_frame(&mut recv, READ_TIMEOUT + wait).await {
            Ok(f) => f,
            Err(e) => {
                let why = match (e, wrote) {
                    (_, Err(w)) => w,
                    (ReadFail::TimedOut, _) => "no answer in time".to_string(),
                    (ReadFail::Ended, _) => "the relay ended the stream without an answer".to_string(),
                    (other, _) => other.to_string(),
                };
                return Err(net(format!("the request to the relay at {addr} failed: {why}")));
            }
        };
        Response::decode(&frame).map_err(|e| RelayError::Protocol(e.to_string()))
    }

    /// The space's access list (`None` if the relay does not know the space).
    /// The list's signature is checked; whether its signer may sign it is the
    /// caller's to judge (a member of the space).
    pub async fn access(&self, space: SpaceTag) -> Result<Option<SignedAccess>, RelayError> {
        match self.request(&Request::Access { space }).await? {
            Response::Access(None) => Ok(None),
            Response::Access(Some(a)) if a.space != space => {
                Err(RelayError::Protocol("an access list for another space".into()))
            }
            Response::Access(Some(a)) if !a.verify() => Err(RelayError::Protocol(
                "an access list whose signature does not verify".into(),
            )),
            Response::Access(Some(a)) => Ok(Some(a)),
            other => Err(unexpected(other)),
        }
    }

    /// Registers the space or replaces its access list.
    pub async fn set_access(&self, access: SignedAccess) -> Result<(), RelayError> {
        match self.request(&Request::SetAccess(access)).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Posts a sealed bundle for the space's other devices; returns its
    /// sequence number.
    pub async fn post(&self, space: SpaceTag, bundle: impl AsRef<[u8]>) -> Result<u64, RelayError> {
        let bytes =
            Request::encode_post(space, bundle.as_ref()).map_err(|e| RelayError::Request(e.to_string()))?;
        match self.exchange(&bytes, Duration::ZERO).await? {
            Response::Posted { seq } => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    /// Bundles other devices posted after `after`, waiting up to `wait`
    /// (at most 25 s) for one if there is none; acknowledges everything up to
    /// `after`. Returns `(items, more)`: the items in ascending sequence
    /// order, and whether more wait after the last one.
    pub async fn fetch(
        &self,
        space: SpaceTag,
        after: u64,
        wait: Duration,
    ) -> Result<(Vec<(u64, Vec<u8>)>, bool), RelayError> {
        let wait_ms = u32::try_from(wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(MAX_WAIT_MS);
        match self
            .request(&Request::Fetch {
                space,
                after,
                wait_ms,
            })
            .await?
        {
            Response::Bundles { items, .. } if items.first().is_some_and(|(seq, _)| *seq <= after) => Err(
                RelayError::Protocol(format!("bundles from before {after}, which was asked from")),
            ),
            Response::Bundles { items, more } => Ok((items, more)),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the connection and waits briefly for the relay to learn of it.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

fn unexpected(answer: Response) -> RelayError {
    match answer {
        Response::Failure(text) => RelayError::Refused(text),
        Response::Access(_) => RelayError::Protocol("an unexpected access list".into()),
        Response::Done => RelayError::Protocol("an unexpected 'done'".into()),
        Response::Posted { .. } => RelayError::Protocol("an unexpected 'posted'".into()),
        Response::Bundles { .. } => RelayError::Protocol("unexpected bundles".into()),
    }
}

//! TLS for duet's QUIC transport: every connection is mutually authenticated by
//! the two devices' ed25519 keys.
//!
//! # Design
//! Each device presents its [`DeviceId`] (its ed25519 public key) as an
//! [RFC 7250] raw public key: the TLS `Certificate` message carries a bare
//! `SubjectPublicKeyInfo`, no X.509 certificate. There is nothing to sign,
//! expire or chain; the key *is* the identity, as in iroh. rustls 0.23 supports
//! raw public keys on both sides, and quinn passes them through untouched.
//!
//! Both sides verify the other in the handshake, before any application byte
//! is exchanged:
//! 1. the presented key is one well-formed ed25519 `SubjectPublicKeyInfo`
//!    (and not a weak, small-order key);
//! 2. the [`PeerPolicy`] allows that device ([`AllowList`] for sync,
//!    [`AnyDevice`] for pairing, where the PAKE authenticates instead);
//! 3. the `CertificateVerify` signature over the handshake transcript is a
//!    valid ed25519 signature by that key (rustls's
//!    [`verify_tls13_signature_with_raw_key`](rustls::crypto::verify_tls13_signature_with_raw_key)
//!    with *ring*'s algorithms).
//!
//! A sync server shows its key only to a client whose server name (SNI) its
//! [`KeyGate`] opens for ([`gated_server_config`]): the key goes out before
//! the client authenticates, and it is a stable identifier. The engine's gate
//! opens for a name only the couple's devices can compute.
//!
//! Session resumption and 0-RTT are off on both sides: a resumed TLS 1.3
//! session skips the certificate exchange, so the policy would not be asked
//! again and a revoked device could keep reconnecting on an old ticket. A full
//! handshake costs one ed25519 signature and verification each way.
//!
//! [RFC 7250]: https://www.rfc-editor.org/rfc/rfc7250

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use duet_model::identity::{DeviceId, DeviceSecret};
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::{self, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// ALPN of a sync connection between two paired devices.
pub const ALPN_SYNC: &[u8] = b"duet/1";

/// ALPN of a pairing connection (the PAKE authenticates, not the policy).
/// Version 2: the host chooses the seat and admits only once its person
/// confirmed the phrase. A device offering another version fails the TLS
/// handshake with `no_application_protocol` (see [`is_alpn_refusal`]).
pub const ALPN_PAIR: &[u8] = b"duet-pair/2";

/// ALPN of a connection to a mailbox relay (the `duet-relay` crate). Both
/// sides use [`AnyDevice`]: the relay authorizes each request by the device
/// key the handshake proved, and the device trusts no relay key (what it
/// posts is sealed and signed).
pub const ALPN_RELAY: &[u8] = b"duet-relay/1";

/// The TLS server name a client sends when nothing more is needed (pairing,
/// relays). Devices are found by key, not by name, so the name is ignored by
/// the verifier; pass it to `quinn::Endpoint::connect`. A sync server behind a
/// [`KeyGate`] needs the name its gate opens for instead.
pub const SERVER_NAME: &str = "duet";

/// How long a connection may be silent before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an otherwise idle connection sends a keep-alive (well within
/// [`IDLE_TIMEOUT`], and often enough to keep a NAT binding open).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which devices may complete a handshake with this one.
///
/// Asked during the TLS handshake of every new connection, on both sides, with
/// the key the other side presented (before its signature is checked, so the
/// answer must not depend on anything but the key).
pub trait PeerPolicy: Send + Sync + Debug {
    /// Whether `peer` may connect.
    fn allows(&self, peer: &DeviceId) -> bool;
}

/// The devices allowed to sync: a set shared with the endpoint that uses it.
///
/// Clones share one set, so the engine keeps a clone and updates it while
/// endpoints run: a partner's new device learned through sync is
/// [`insert`](AllowList::insert)ed, a revoked one [`remove`](AllowList::remove)d.
/// Changes apply to handshakes that start afterwards; open connections are
/// the caller's to close.
///
/// A std `RwLock`, not a tokio one: it is held only for a set look-up, never
/// across an await, and rustls calls the policy from synchronous code.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    devices: Arc<RwLock<HashSet<DeviceId>>>,
}

impl AllowList {
    /// An allow list holding `devices`.
    pub fn new(devices: impl IntoIterator<Item = DeviceId>) -> AllowList {
        AllowList {
            devices: Arc::new(RwLock::new(devices.into_iter().collect())),
        }
    }

    /// Allows `device`; returns whether it was new.
    pub fn insert(&self, device: DeviceId) -> bool {
        self.write().insert(device)
    }

    /// Stops allowing `device`; returns whether it was allowed.
    pub fn remove(&self, device: &DeviceId) -> bool {
        self.write().remove(device)
    }

    /// Allows exactly `devices` from now on (after membership changed).
    pub fn replace(&self, devices: impl IntoIterator<Item = DeviceId>) {
        *self.write() = devices.into_iter().collect();
    }

    /// Whether `device` is allowed.
    pub fn contains(&self, device: &DeviceId) -> bool {
        // A panic elsewhere while holding the lock cannot leave a `HashSet`
        // half-updated in a way that matters here, so poisoning is ignored.
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(device)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<DeviceId>> {
        self.devices.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PeerPolicy for AllowList {
    fn allows(&self, peer: &DeviceId) -> bool {
        self.contains(peer)
    }
}

/// Allows every device: for pairing, where the PAKE over the connection
/// authenticates the other side. The device key is still proven by the
/// handshake signature, so [`peer_device`] is still the key the peer holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyDevice;

impl PeerPolicy for AnyDevice {
    fn allows(&self, _peer: &DeviceId) -> bool {
        true
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The device key could not be encoded (PKCS#8 or SubjectPublicKeyInfo).
    #[error("cannot encode the device key for TLS: {0}")]
    KeyEncoding(#[from] pkcs8::Error),
    /// rustls refused the key or the protocol configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC's initial packets need.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// Decides, from the server name a client sent (its TLS SNI), whether a
/// server shows the client its device key.
///
/// In TLS 1.3 the server's `Certificate` goes out before the client has
/// authenticated, so a server that showed its key to every client would show
/// a stable identifier to anyone who connects. Asked once per handshake,
/// before anything else is known about the client.
pub trait KeyGate: Send + Sync + Debug {
    /// Whether a client that sent `server_name` (if any) may see the key.
    fn opens_for(&self, server_name: Option<&str>) -> bool;
}

/// A QUIC server configuration that presents `secret`'s device key, requires
/// the client to present its own, and completes the handshake only with
/// clients that `policy` allows. `alpn` lists the protocols served.
///
/// It shows the key to anyone who connects: for pairing and relays. A sync
/// server uses [`gated_server_config`].
pub fn server_config(
    secret: &DeviceSecret,
    policy: Arc<dyn PeerPolicy>,
    alpn: &[&[u8]],
) -> Result<quinn::ServerConfig, TlsError> {
    server_config_with(Arc::new(OwnKey::new(secret)?), policy, alpn)
}

/// As [`server_config`], but the device key is presented only to clients
/// whose server name `gate` opens for. Any other client gets no key at all:
/// the server ends the handshake with an `access_denied` alert right after
/// the ClientHello, so it never learns which device answered. (A client the
/// gate lets through still has to pass `policy` and prove its own key.)
pub fn gated_server_config(
    secret: &DeviceSecret,
    policy: Arc<dyn PeerPolicy>,
    alpn: &[&[u8]],
    gate: Arc<dyn KeyGate>,
) -> Result<quinn::ServerConfig, TlsError> {
    let resolver = GatedKey {
        own: OwnKey::new(secret)?,
        gate,
    };
    server_config_with(Arc::new(resolver), policy, alpn)
}

fn server_config_with(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    policy: Arc<dyn PeerPolicy>,
    alpn: &[&[u8]],
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier::new(policy, &provider));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No resumption (see the module doc): no tickets, no session cache, and
    // so no 0-RTT (`max_early_data_size` stays 0).
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(transport_config());
    Ok(config)
}

/// A QUIC client configuration that presents `secret`'s device key and
/// completes the handshake only with servers that `policy` allows, speaking
/// `alpn`. Connect with [`SERVER_NAME`]; the name is not checked.
pub fn client_config(
    secret: &DeviceSecret,
    policy: Arc<dyn PeerPolicy>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier::new(policy, &provider));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(OwnKey::new(secret)?));
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport_config());
    Ok(config)
}

/// The device on the other side of `conn`, as verified in its handshake.
///
/// `None` only if the handshake has not completed, which a
/// `quinn::Connection` (as opposed to a `Connecting`) rules out.
pub fn peer_device(conn: &quinn::Connection) -> Option<DeviceId> {
    let identity = conn.peer_identity()?;
    let presented = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    match presented.as_slice() {
        [key] => device_from_spki(key),
        _ => None,
    }
}

/// True if a connection failed because the two ends share no ALPN: the TLS
/// alert `no_application_protocol` (120), sent or received. For pairing this
/// means the other device runs another version of duet.
pub fn is_alpn_refusal(e: &quinn::ConnectionError) -> bool {
    let refused = quinn::TransportErrorCode::crypto(120);
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code == refused,
        quinn::ConnectionError::TransportError(t) => t.code == refused,
        _ => false,
    }
}

/// Transport settings for a sync connection: closed after [`IDLE_TIMEOUT`] of
/// silence, kept alive every [`KEEP_ALIVE_INTERVAL`] while open, and no path
/// MTU discovery: its probes (padded packets of up to 1,452 bytes) were two
/// thirds of the bytes of a short sync (16 KB of 21 KB for ten edits each
/// way), while the 1,200-byte packets every QUIC path carries cost a large
/// first sync about 3% more bytes. Both configs above already use it.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    Arc::new(transport())
}

/// The settings of [`transport_config`], to build on (the relay bounds its
/// streams on top of them).
pub fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // Milliseconds in a u32 always fit a VarInt, so this needs no fallible path.
    let idle_ms = u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    transport
        .max_idle_timeout(Some(quinn::VarInt::from_u32(idle_ms).into()))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .mtu_discovery_config(None);
    transport
}

/// *ring*, TLS 1.3 only (set by the builders).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The 32-byte device key inside a presented `SubjectPublicKeyInfo`, if it is
/// exactly one DER-encoded ed25519 key that is a device id, so not of small
/// order (a weak key would let anyone forge its signatures).
fn device_from_spki(spki: &[u8]) -> Option<DeviceId> {
    let key = VerifyingKey::from_public_key_der(spki).ok()?;
    DeviceId::from_bytes(key.as_bytes())
}

/// This device's key, presented as a raw public key on both sides.
#[derive(Debug)]
struct OwnKey(Arc<CertifiedKey>);

impl OwnKey {
    fn new(secret: &DeviceSecret) -> Result<OwnKey, TlsError> {
        // The PKCS#8 document zeroizes itself on drop.
        let pkcs8 = secret.signing_key().to_pkcs8_der()?;
        let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_bytes()))?;
        let spki = secret
            .device_id()
            .verifying_key()
            .to_public_key_der()
            .map_err(pkcs8::Error::from)?;
        let presented = CertificateDer::from(spki.into_vec());
        Ok(OwnKey(Arc::new(CertifiedKey::new(vec![presented], signer))))
    }
}

impl rustls::client::ResolvesClientCert for OwnKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn only_raw_public_keys(&self) -> bool {
        true
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnKey {
    fn resolve(&self, _client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn only_raw_public_keys(&self) -> bool {
        true
    }
}

/// This device's key, presented only to clients the gate opens for.
#[derive(Debug)]
struct GatedKey {
    own: OwnKey,
    gate: Arc<dyn KeyGate>,
}

impl rustls::server::ResolvesServerCert for GatedKey {
    fn resolve(&self, client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.gate.opens_for(client_hello.server_name()) {
            return Some(Arc::clone(&self.own.0));
        }
        tracing::debug!("refused a client that sent no server name this device recognises");
        // No key at all: rustls ends the handshake (`access_denied`).
        None
    }

    fn only_raw_public_keys(&self) -> bool {
        true
    }
}

/// Verifies the other side's raw public key: well-formed, allowed by the
/// policy, and (separately, when rustls asks) the handshake signature.
#[derive(Debug)]
struct PeerVerifier {
    policy: Arc<dyn PeerPolicy>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(policy: Arc<dyn PeerPolicy>, provider: &CryptoProvider) -> PeerVerifier {
        PeerVerifier {
            policy,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check_key(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<DeviceId, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(CertificateError::UnknownIssuer.into());
        }
        let Some(peer) = device_from_spki(end_entity) else {
            tracing::debug!("refused a peer: presented key is not an ed25519 device key");
            return Err(CertificateError::BadEncoding.into());
        };
        if !self.policy.allows(&peer) {
            tracing::debug!(peer = %peer.short(), "refused a peer: device not allowed");
            // Sent as the `access_denied` alert.
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(peer)
    }

    fn check_signature(
        &self,
        message: &[u8],
        key: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(key.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_key(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_key(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spki_of(secret: &DeviceSecret) -> Vec<u8> {
        let doc = secret.device_id().verifying_key().to_public_key_der();
        doc.unwrap().into_vec()
    }

    #[test]
    fn own_key_is_presented_as_the_device_spki() {
        let secret = DeviceSecret::from_bytes(&[9u8; 32]);
        let own = OwnKey::new(&secret).unwrap();
        assert_eq!(own.0.cert.len(), 1);
        assert_eq!(own.0.cert[0].as_ref(), spki_of(&secret).as_slice());
        assert_eq!(device_from_spki(&own.0.cert[0]), Some(secret.device_id()));
    }

    #[test]
    fn malformed_and_weak_keys_are_not_devices() {
        let spki = spki_of(&DeviceSecret::from_bytes(&[9u8; 32]));
        assert!(device_from_spki(&spki).is_some());
        assert!(device_from_spki(&spki[..spki.len() - 1]).is_none());
        let mut trailing = spki.clone();
        trailing.push(0);
        assert!(device_from_spki(&trailing).is_none());
        // The identity point (y = 1) has small order: anyone could sign for it.
        let mut weak = spki;
        let n = weak.len();
        weak[n - 32..].fill(0);
        weak[n - 32] = 1;
        assert!(device_from_spki(&weak).is_none());
    }

    #[test]
    fn allow_list_clones_share_updates() {
        let a = DeviceSecret::from_bytes(&[1u8; 32]).device_id();
        let list = AllowList::default();
        let engine_copy = list.clone();
        assert!(!list.allows(&a));
        assert!(engine_copy.insert(a));
        assert!(list.allows(&a));
        assert!(engine_copy.remove(&a));
        assert!(!list.allows(&a));
        assert!(AnyDevice.allows(&a));
    }
}

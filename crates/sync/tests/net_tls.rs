//! The TLS layer over real loopback QUIC: devices authenticate each other by
//! their ed25519 keys, and the peer policy is enforced inside the handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duet_model::identity::{DeviceId, DeviceSecret};
use duet_sync::net::tls::{
    ALPN_PAIR, ALPN_SYNC, AllowList, AnyDevice, KeyGate, PeerPolicy, SERVER_NAME, client_config,
    gated_server_config, peer_device, server_config,
};
use quinn::{Connection, ConnectionError, Endpoint};
use tokio::time::timeout;

/// TLS `access_denied`, which the verifiers send for a device the policy refuses.
const ACCESS_DENIED: u8 = 49;
/// TLS `decrypt_error`, sent for a handshake signature that does not verify.
const DECRYPT_ERROR: u8 = 51;
/// TLS `no_application_protocol`.
const NO_APPLICATION_PROTOCOL: u8 = 120;
/// Long enough for any loopback step; a test that hangs fails instead.
const STEP: Duration = Duration::from_secs(5);

fn device(n: u8) -> DeviceSecret {
    DeviceSecret::from_bytes(&[n; 32])
}

fn allow(devices: &[&DeviceSecret]) -> AllowList {
    AllowList::new(devices.iter().map(|d| d.device_id()))
}

fn server(secret: &DeviceSecret, policy: Arc<dyn PeerPolicy>) -> Endpoint {
    let config = server_config(secret, policy, &[ALPN_SYNC]).unwrap();
    Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn client(secret: &DeviceSecret, policy: Arc<dyn PeerPolicy>, alpn: &[u8]) -> Endpoint {
    let mut endpoint = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(secret, policy, alpn).unwrap());
    endpoint
}

fn addr(endpoint: &Endpoint) -> SocketAddr {
    endpoint.local_addr().unwrap()
}

/// The server's view of the next incoming connection: the handshake's outcome.
async fn accept(endpoint: &Endpoint) -> Result<Connection, ConnectionError> {
    let incoming = timeout(STEP, endpoint.accept()).await.unwrap().unwrap();
    timeout(STEP, incoming).await.unwrap()
}

async fn connect(endpoint: &Endpoint, to: SocketAddr) -> Result<Connection, ConnectionError> {
    let connecting = endpoint.connect(to, SERVER_NAME).unwrap();
    timeout(STEP, connecting).await.unwrap()
}

/// The TLS alert behind a handshake failure, on either side: the side that
/// refused sees its own `TransportError`, the other the peer's close.
fn tls_alert(err: &ConnectionError) -> Option<u8> {
    let code = match err {
        ConnectionError::TransportError(e) => e.code,
        ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return None,
    };
    u8::try_from(u64::from(code).checked_sub(0x100)?).ok()
}

/// Asserts that the server endpoint produced no further connection attempt:
/// no `Incoming` at all within a short wait.
async fn assert_no_more_incoming(endpoint: &Endpoint) {
    let next = timeout(Duration::from_millis(300), endpoint.accept()).await;
    assert!(next.is_err(), "no other connection attempt was expected");
}

/// One request and reply over a bi stream, client first.
async fn exchange(client: &Connection, server: &Connection) {
    let client_side = async {
        let (mut send, mut recv) = client.open_bi().await.unwrap();
        send.write_all(b"hello from the client").await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(1024).await.unwrap()
    };
    let server_side = async {
        let (mut send, mut recv) = server.accept_bi().await.unwrap();
        let request = recv.read_to_end(1024).await.unwrap();
        send.write_all(b"hello from the server").await.unwrap();
        send.finish().unwrap();
        request
    };
    let (reply, request) = timeout(STEP, async { tokio::join!(client_side, server_side) })
        .await
        .unwrap();
    assert_eq!(request, b"hello from the client");
    assert_eq!(reply, b"hello from the server");
}

fn negotiated_alpn(conn: &Connection) -> Option<Vec<u8>> {
    let data = conn.handshake_data()?;
    let data = data.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?;
    data.protocol
}

/// Connects a client to a server, both allowed, and checks the exchange and
/// that each side sees the other's device key.
async fn connect_allowed(client_secret: &DeviceSecret, server_secret: &DeviceSecret) -> (DeviceId, DeviceId) {
    let both = allow(&[client_secret, server_secret]);
    let server_ep = server(server_secret, Arc::new(both.clone()));
    let client_ep = client(client_secret, Arc::new(both), ALPN_SYNC);
    let (client_conn, server_conn) = tokio::join!(connect(&client_ep, addr(&server_ep)), accept(&server_ep));
    let (client_conn, server_conn) = (client_conn.unwrap(), server_conn.unwrap());
    exchange(&client_conn, &server_conn).await;
    assert_eq!(negotiated_alpn(&client_conn).as_deref(), Some(ALPN_SYNC));
    assert_eq!(negotiated_alpn(&server_conn).as_deref(), Some(ALPN_SYNC));
    let seen = (
        peer_device(&client_conn).unwrap(),
        peer_device(&server_conn).unwrap(),
    );
    client_conn.close(0u32.into(), b"done");
    server_ep.wait_idle().await;
    seen
}

#[tokio::test]
async fn allowed_devices_connect_both_ways_and_see_each_others_key() {
    let (a, b) = (device(1), device(2));

    let (a_sees, b_sees) = connect_allowed(&a, &b).await;
    assert_eq!(a_sees, b.device_id(), "client A sees server B");
    assert_eq!(b_sees, a.device_id(), "server B sees client A");

    let (b_sees, a_sees) = connect_allowed(&b, &a).await;
    assert_eq!(b_sees, a.device_id(), "client B sees server A");
    assert_eq!(a_sees, b.device_id(), "server A sees client B");
}

#[tokio::test]
async fn server_refuses_a_client_it_does_not_allow_during_the_handshake() {
    let (server_secret, partner, stranger) = (device(1), device(2), device(3));
    let server_ep = server(&server_secret, Arc::new(allow(&[&partner])));
    // The stranger is happy with the server: only the server's check can stop it.
    let client_ep = client(&stranger, Arc::new(AnyDevice), ALPN_SYNC);

    let client_side = async {
        // TLS 1.3 lets a client finish its side of the handshake before the
        // server has judged its key, so connecting may appear to succeed; it
        // then tries to send application data at once.
        let conn = connect(&client_ep, addr(&server_ep)).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"secret notes").await.ok();
        send.finish().ok();
        if let Ok(reply) = timeout(STEP, recv.read_to_end(1024)).await.unwrap() {
            panic!("the refused client got a reply: {reply:?}");
        }
        Err::<(), _>(conn.closed().await)
    };
    let (client_result, server_result) = tokio::join!(client_side, accept(&server_ep));

    // The server's handshake failed: no `Connection` ever existed, so no
    // stream could be accepted and not one application byte was read.
    let server_err = server_result.expect_err("the server must refuse the stranger");
    assert!(
        matches!(server_err, ConnectionError::TransportError(_)),
        "refused locally by the server's verifier: {server_err:?}"
    );
    assert_eq!(tls_alert(&server_err), Some(ACCESS_DENIED), "{server_err:?}");

    let client_err: ConnectionError = client_result.expect_err("the stranger must be refused");
    assert!(
        matches!(client_err, ConnectionError::ConnectionClosed(_)),
        "closed by the server: {client_err:?}"
    );
    assert_eq!(tls_alert(&client_err), Some(ACCESS_DENIED), "{client_err:?}");
    assert_no_more_incoming(&server_ep).await;
}

#[tokio::test]
async fn client_refuses_a_server_it_does_not_expect() {
    let (me, impostor, partner) = (device(1), device(2), device(3));
    // The impostor would accept anyone; the client expects only its partner.
    let server_ep = server(&impostor, Arc::new(AnyDevice));
    let client_ep = client(&me, Arc::new(allow(&[&partner])), ALPN_SYNC);

    let (client_result, server_result) =
        tokio::join!(connect(&client_ep, addr(&server_ep)), accept(&server_ep));

    let client_err = client_result.expect_err("the client must refuse the impostor");
    assert!(
        matches!(client_err, ConnectionError::TransportError(_)),
        "refused locally by the client's verifier: {client_err:?}"
    );
    assert_eq!(tls_alert(&client_err), Some(ACCESS_DENIED), "{client_err:?}");
    // The client refuses before sending its own certificate and Finished, so
    // the server never completes a handshake either.
    let server_err = server_result.expect_err("the server gets no connection");
    assert_eq!(tls_alert(&server_err), Some(ACCESS_DENIED), "{server_err:?}");
}

#[tokio::test]
async fn allow_list_updates_apply_to_new_connections() {
    let (server_secret, phone, laptop) = (device(1), device(2), device(3));
    let allowed = allow(&[&phone]);
    let server_ep = server(&server_secret, Arc::new(allowed.clone()));
    let server_id = Arc::new(allow(&[&server_secret]));
    // One endpoint and config per device across all attempts, so a resumed
    // TLS session (which would skip the key check) would show up here.
    let phone_ep = client(&phone, server_id.clone(), ALPN_SYNC);
    let laptop_ep = client(&laptop, server_id, ALPN_SYNC);
    let to = addr(&server_ep);

    let attempt = async |client_ep: &Endpoint| {
        let (client_result, server_result) = tokio::join!(connect(client_ep, to), accept(&server_ep));
        match server_result {
            Ok(server_conn) => {
                let client_conn = client_result.unwrap();
                exchange(&client_conn, &server_conn).await;
                let seen = peer_device(&server_conn);
                client_conn.close(0u32.into(), b"done");
                server_conn.closed().await;
                Ok(seen.unwrap())
            }
            Err(e) => {
                assert_eq!(tls_alert(&e), Some(ACCESS_DENIED), "{e:?}");
                Err(e)
            }
        }
    };

    assert_eq!(attempt(&phone_ep).await.unwrap(), phone.device_id());
    assert_eq!(attempt(&phone_ep).await.unwrap(), phone.device_id());
    attempt(&laptop_ep).await.expect_err("not yet paired");

    // The partner's new laptop is learned through sync.
    assert!(allowed.insert(laptop.device_id()));
    assert_eq!(attempt(&laptop_ep).await.unwrap(), laptop.device_id());

    // The phone is lost and revoked.
    assert!(allowed.remove(&phone.device_id()));
    attempt(&phone_ep).await.expect_err("revoked");
    assert_eq!(attempt(&laptop_ep).await.unwrap(), laptop.device_id());
    assert_no_more_incoming(&server_ep).await;
}

#[tokio::test]
async fn a_client_speaking_another_protocol_is_refused() {
    let (server_secret, partner) = (device(1), device(2));
    let both = Arc::new(allow(&[&server_secret, &partner]));
    let server_ep = server(&server_secret, both.clone());
    let client_ep = client(&partner, both, ALPN_PAIR);

    let (client_result, server_result) =
        tokio::join!(connect(&client_ep, addr(&server_ep)), accept(&server_ep));
    let server_err = server_result.expect_err("the server serves only duet/1");
    assert_eq!(tls_alert(&server_err), Some(NO_APPLICATION_PROTOCOL));
    let client_err = client_result.expect_err("the client asked for duet-pair/1");
    assert_eq!(tls_alert(&client_err), Some(NO_APPLICATION_PROTOCOL));
}

#[tokio::test]
async fn a_client_claiming_an_allowed_key_without_its_secret_is_refused() {
    let (server_secret, partner, thief) = (device(1), device(2), device(3));
    let server_ep = server(&server_secret, Arc::new(allow(&[&partner])));
    let mut client_ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client_ep.set_default_client_config(forged::client_config(&partner, &thief));

    let (_, server_result) = tokio::join!(connect(&client_ep, addr(&server_ep)), accept(&server_ep));
    // The key is allowed, but the handshake signature is the thief's.
    let server_err = server_result.expect_err("the server must check the signature");
    assert_eq!(tls_alert(&server_err), Some(DECRYPT_ERROR), "{server_err:?}");
    assert_no_more_incoming(&server_ep).await;
}

#[tokio::test]
async fn a_client_presenting_a_weak_key_is_refused_even_by_a_server_allowing_anyone() {
    let server_secret = device(1);
    let server_ep = server(&server_secret, Arc::new(AnyDevice));
    // The identity point: a small-order key whose signatures anyone can forge.
    let identity: [u8; 32] = std::array::from_fn(|i| u8::from(i == 0));
    let mut client_ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client_ep.set_default_client_config(forged::client_config_presenting(identity, &device(3)));

    let (_, server_result) = tokio::join!(connect(&client_ep, addr(&server_ep)), accept(&server_ep));
    let server_err = server_result.expect_err("a weak key is no device");
    // Refused for the key itself, before its signature is looked at.
    assert_ne!(tls_alert(&server_err), Some(DECRYPT_ERROR), "{server_err:?}");
    assert!(tls_alert(&server_err).is_some(), "{server_err:?}");
    assert_no_more_incoming(&server_ep).await;
}

/// Opens for one server name.
#[derive(Debug)]
struct Password(&'static str);

impl KeyGate for Password {
    fn opens_for(&self, server_name: Option<&str>) -> bool {
        server_name == Some(self.0)
    }
}

#[tokio::test]
async fn a_gated_server_shows_its_key_only_to_clients_sending_the_name_it_opens_for() {
    let (server_secret, member, stranger) = (device(1), device(2), device(3));
    let both = allow(&[&server_secret, &member]);
    let config = gated_server_config(
        &server_secret,
        Arc::new(both.clone()),
        &[ALPN_SYNC],
        Arc::new(Password("abc.duet.invalid")),
    )
    .unwrap();
    let server_ep = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();

    // A stranger that trusts any key and records what it is shown: with no
    // name, the fixed name, or a wrong one, it is shown nothing.
    for name in ["duet", "abd.duet.invalid", "abc.duet.invalid.evil"] {
        let (config, seen) = forged::recording_client_config(&stranger);
        let mut client_ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client_ep.set_default_client_config(config);
        let connecting = client_ep.connect(addr(&server_ep), name).unwrap();
        let (client_result, server_result) = tokio::join!(timeout(STEP, connecting), accept(&server_ep));
        let client_err = client_result.unwrap().expect_err("no key, no handshake");
        assert_eq!(tls_alert(&client_err), Some(ACCESS_DENIED), "{client_err:?}");
        assert!(server_result.is_err());
        assert!(
            seen.lock().unwrap().is_empty(),
            "{name}: shown {:?}",
            seen.lock().unwrap()
        );
    }

    // The same stranger sending the right name is shown the key (and then
    // refused as a device not allowed): the recorder does record.
    let (config, seen) = forged::recording_client_config(&stranger);
    let mut client_ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client_ep.set_default_client_config(config);
    let connecting = client_ep.connect(addr(&server_ep), "abc.duet.invalid").unwrap();
    let (_, server_result) = tokio::join!(timeout(STEP, connecting), accept(&server_ep));
    assert_eq!(tls_alert(&server_result.unwrap_err()), Some(ACCESS_DENIED));
    let shown = seen.lock().unwrap().clone();
    assert_eq!(shown.len(), 1);
    assert!(shown[0].ends_with(server_secret.device_id().as_bytes()));

    // A member sending the name connects and sees the server's key.
    let client_ep = client(&member, Arc::new(both), ALPN_SYNC);
    let connecting = client_ep.connect(addr(&server_ep), "abc.duet.invalid").unwrap();
    let (client_conn, server_conn) = tokio::join!(timeout(STEP, connecting), accept(&server_ep));
    let (client_conn, server_conn) = (client_conn.unwrap().unwrap(), server_conn.unwrap());
    exchange(&client_conn, &server_conn).await;
    assert_eq!(peer_device(&client_conn), Some(server_secret.device_id()));
}

/// A hand-built rustls client that presents one device's public key and signs
/// the handshake with another device's secret, and trusts any server.
mod forged {
    use std::sync::{Arc, Mutex};

    use duet_model::identity::DeviceSecret;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
    use rustls::sign::CertifiedKey;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    pub fn client_config(claimed: &DeviceSecret, signer: &DeviceSecret) -> quinn::ClientConfig {
        client_config_presenting(*claimed.device_id().as_bytes(), signer)
    }

    /// The same, presenting any 32 bytes as the ed25519 key (even a weak key,
    /// which no `DeviceId` can hold).
    pub fn client_config_presenting(claimed: [u8; 32], signer: &DeviceSecret) -> quinn::ClientConfig {
        let pkcs8 = signer.signing_key().to_pkcs8_der().unwrap();
        let signer =
            rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_bytes())).unwrap();
        // Any ed25519 SubjectPublicKeyInfo is a fixed 12-byte header, then the key.
        let mut spki = signer_spki_header();
        spki.extend_from_slice(&claimed);
        let key = CertifiedKey::new(vec![CertificateDer::from(spki)], signer);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnyone))
            .with_client_cert_resolver(Arc::new(Forged(Arc::new(key))));
        tls.alpn_protocols = vec![super::ALPN_SYNC.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        quinn::ClientConfig::new(Arc::new(crypto))
    }

    fn signer_spki_header() -> Vec<u8> {
        let der = DeviceSecret::from_bytes(&[1; 32])
            .device_id()
            .verifying_key()
            .to_public_key_der()
            .unwrap();
        der.as_bytes()[..der.as_bytes().len() - 32].to_vec()
    }

    #[derive(Debug)]
    struct Forged(Arc<CertifiedKey>);

    impl rustls::client::ResolvesClientCert for Forged {
        fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
        fn only_raw_public_keys(&self) -> bool {
            true
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    /// A client for `secret` that trusts any server key and records each
    /// key it is shown.
    pub fn recording_client_config(secret: &DeviceSecret) -> (quinn::ClientConfig, Arc<Mutex<Vec<Vec<u8>>>>) {
        let pkcs8 = secret.signing_key().to_pkcs8_der().unwrap();
        let signer =
            rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_bytes())).unwrap();
        let spki = secret.device_id().verifying_key().to_public_key_der().unwrap();
        let key = CertifiedKey::new(vec![CertificateDer::from(spki.into_vec())], signer);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recording(seen.clone())))
            .with_client_cert_resolver(Arc::new(Forged(Arc::new(key))));
        tls.alpn_protocols = vec![super::ALPN_SYNC.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        (quinn::ClientConfig::new(Arc::new(crypto)), seen)
    }

    /// Trusts anyone, and records the key each server presented.
    #[derive(Debug)]
    struct Recording(Arc<Mutex<Vec<Vec<u8>>>>);

    impl ServerCertVerifier for Recording {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.0.lock().unwrap().push(end_entity.to_vec());
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    }

    #[derive(Debug)]
    struct TrustAnyone;

    impl ServerCertVerifier for TrustAnyone {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    }
}

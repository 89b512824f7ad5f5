//! A `serve` shows its device key only to the couple's devices, over real
//! QUIC on loopback.
//!
//! In TLS 1.3 the server's key goes out before the client authenticates: a
//! serve that showed it to everyone would hand any stranger who connects a
//! stable identifier, one that links the mDNS names it announces day after
//! day. It now shows it only to a client whose TLS server name carries a
//! token of the space key (`duet::sni`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use duet::model::{DeviceId, DeviceSecret};
use duet_sync::net::tls::{self, ALPN_SYNC, PeerPolicy};

mod common;
use common::*;

/// Lets any server in, and records each device key a server presented.
#[derive(Debug, Default)]
struct Shown(Mutex<Vec<DeviceId>>);

impl PeerPolicy for Shown {
    fn allows(&self, peer: &DeviceId) -> bool {
        self.0.lock().unwrap().push(*peer);
        true
    }
}

/// Connects to `addr` with `name` as a stranger that would trust any key,
/// waits for the serve to refuse it, and returns the keys it was shown.
async fn knock(stranger: &DeviceSecret, addr: std::net::SocketAddr, name: &str) -> Vec<DeviceId> {
    let shown = Arc::new(Shown::default());
    let config = tls::client_config(stranger, shown.clone(), ALPN_SYNC).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let connecting = endpoint.connect_with(config, addr, name).unwrap();
    if let Ok(conn) = within("a stranger's handshake", connecting).await {
        // TLS 1.3 lets the client finish before the serve judges its key:
        // the refusal then closes the connection.
        within("the serve's refusal", conn.closed()).await;
    }
    shown.0.lock().unwrap().clone()
}

#[tokio::test]
async fn a_stranger_never_sees_the_serves_device_key_while_a_member_syncs() {
    let root = tempfile::tempdir().unwrap();
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    pair(&sam, &alex, false).await;
    let server = start_serve(&sam).await;
    let sam_id = device_of(&sam);
    let stranger = DeviceSecret::from_bytes(&[0x5a; 32]);

    // Whatever name a stranger sends, the handshake ends with no key shown:
    // none, the fixed name, a made-up token, a token of another couple.
    let other_couple = {
        let carol = init(root.path(), "Carol", "tablet");
        lock(&carol).sync_server_name().unwrap()
    };
    for name in [
        tls::SERVER_NAME,
        "0123456789abcdef.duet.invalid",
        "duet.invalid",
        other_couple.as_str(),
    ] {
        let seen = knock(&stranger, server.addr, name).await;
        assert!(seen.is_empty(), "a stranger sending {name:?} was shown {seen:?}");
    }

    // The same stranger sending the couple's name is shown Sam's key (and
    // then refused): the gate is what hid it.
    let seen = knock(&stranger, server.addr, &server_name(server.addr)).await;
    assert_eq!(seen, vec![sam_id]);

    // The partner still syncs, naming the couple by itself.
    add_issue(&alex, "Weekend plans", "");
    sync(&alex, server.addr).await.unwrap();
    assert!(has_title(&sam, "Weekend plans"));
    server.assert_alive(&sam);
    server.stop().await;
}

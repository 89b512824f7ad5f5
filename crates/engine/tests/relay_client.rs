#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A hostile relay against a device's relay round, over real QUIC on
//! loopback: the relay is not trusted, so what it answers must never panic
//! the device, only end the round with a clear error.

mod common;

use std::sync::Arc;

use common::{init, lock, within};
use duet::Error;
use duet_model::DeviceSecret;
use duet_sync::net::tls::{self, ALPN_RELAY, AnyDevice};
use duet_sync::proto::relay::{Response, SignedAccess, SpaceTag, announced};

/// A fake relay answering every request with `answer`, until dropped.
async fn fake_relay(answer: Response) -> (quinn::Endpoint, tokio::task::JoinHandle<()>) {
    let key = DeviceSecret::from_bytes(&[200; 32]);
    let config = tls::server_config(&key, Arc::new(AnyDevice), &[ALPN_RELAY]).unwrap();
    let endpoint = quinn::Endpoint::server(config, common::loopback()).unwrap();
    let bytes = answer.encode().unwrap();
    let server = endpoint.clone();
    let task = tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let bytes = bytes.clone();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    // Read the request whole (whatever it is), then answer.
                    let mut header = [0u8; 4];
                    if recv.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let len = announced(header).unwrap();
                    let mut rest = vec![0u8; len];
                    if recv.read_exact(&mut rest).await.is_err() {
                        return;
                    }
                    let _ = send.write_all(&bytes).await;
                    let _ = send.finish();
                }
            });
        }
    });
    (endpoint, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_list_at_the_last_serial_ends_the_round_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let home = init(root.path(), "Alex", "laptop");
    let (me, space) = {
        let mut h = lock(&home);
        (h.device_id(), SpaceTag::of(&h.space_id().unwrap()))
    };
    // The relay claims a list naming this device and a stranger, at the
    // largest serial: this device wants a list of itself alone, and the next
    // serial does not exist.
    let stranger = DeviceSecret::from_bytes(&[9; 32]);
    let list = SignedAccess::sign(&stranger, space, u64::MAX, [me, stranger.device_id()]).unwrap();
    let (relay, task) = fake_relay(Response::Access(Some(list))).await;
    let addr = relay.local_addr().unwrap().to_string();

    let result = within("a relay round", duet::relay_sync(home.clone(), &addr)).await;
    match result {
        Err(Error::Relay(text)) => assert!(
            text.contains("largest possible serial") && text.contains("another relay"),
            "{text}"
        ),
        other => panic!("expected a relay error, got {other:?}"),
    }
    // The home is fine.
    lock(&home).status().unwrap();
    relay.close(0u32.into(), b"done");
    task.abort();
}

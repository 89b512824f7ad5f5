//! Decompression bombs through a real relay: automerge data a megabyte on the
//! wire that would inflate to a gigabyte inside automerge 0.12 (which aborts
//! the process when the allocation fails, past `catch_unwind`). A member's
//! device posts one, sealed with the space key; the partner's `serve` fetches
//! it, refuses it, skips it for good, and keeps syncing, restart or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crypto_box::aead::OsRng;
use duet::Home;
use duet::relay_server::{RelayClient, RelayOptions};
use duet_sync::proto::bundle::{self, BundleBody};
use duet_sync::proto::relay::SpaceTag;
use tokio::sync::{oneshot, watch};

/// A relay on a loopback port.
struct Relay {
    addr: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), duet::relay_server::RelayError>>,
}

async fn start_relay(data: &Path) -> Relay {
    let mut opts = RelayOptions::new(loopback());
    opts.data = Some(data.to_path_buf());
    let (stop, stop_rx) = watch::channel(false);
    let (ready, ready_rx) = oneshot::channel();
    let task = tokio::spawn(duet::relay_server::run(opts, stop_rx, Some(ready)));
    let addr = within("the relay to listen", ready_rx).await.unwrap();
    Relay {
        addr: addr.to_string(),
        stop,
        task,
    }
}

/// A compressed automerge change chunk (type 2) whose body is a gigabyte of
/// zeros, deflated a MiB at a time.
fn bomb() -> Vec<u8> {
    let mib = vec![0u8; 1 << 20];
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..1024 {
        e.write_all(&mib).unwrap();
    }
    let body = e.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut n = body.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        chunk.push(if n == 0 { b } else { b | 0x80 });
        if n == 0 {
            break;
        }
    }
    chunk.extend(body);
    chunk
}

/// A line of `/proc/self/status` in bytes (0 where there is none).
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets this process's peak resident memory to what it holds now; returns that.
fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status("VmRSS:")
}

/// `home`'s device seals `automerge` for its space and posts it to the relay.
async fn post_as(home: &Shared, relay: &str, automerge: Vec<u8>) {
    let (secret, space_id, key, recipients) = {
        let mut h = lock(home);
        let secret = h.store_mut().device_secret().unwrap();
        let space_id = h.space_id().unwrap();
        let key = h.keyring().unwrap().sealing_key().unwrap().clone();
        let recipients = h.read(|doc| duet::model::Membership::of(doc).active()).unwrap();
        (secret, space_id, key, recipients)
    };
    let body = BundleBody {
        space_id: space_id.clone(),
        sender: secret.device_id(),
        created_ms: 1_764_000_000_000,
        automerge,
        attestations: Vec::new(),
    };
    let sealed = bundle::seal(&body, &secret, &key, &recipients, &mut OsRng).unwrap();
    assert!(sealed.len() < 2 << 20, "{} bytes posted", sealed.len());
    let client = RelayClient::connect(relay.parse().unwrap(), &secret)
        .await
        .unwrap();
    client.post(SpaceTag::of(&space_id), &sealed).await.unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_posted_to_the_relay_is_skipped_and_serve_survives_restarts() {
    let root = tempfile::tempdir().unwrap();
    let relay = start_relay(&root.path().join("relay")).await;
    let sam = init(root.path(), "Sam", "laptop");
    let alex = init(root.path(), "Alex", "phone");
    pair(&sam, &alex, false).await;
    within("sam's relay round", duet::relay_sync(sam.clone(), &relay.addr))
        .await
        .unwrap();
    within("alex's relay round", duet::relay_sync(alex.clone(), &relay.addr))
        .await
        .unwrap();

    post_as(&sam, &relay.addr, bomb()).await;
    let before = heads(&alex);
    let base = reset_peak();
    let report = within("alex's relay round", duet::relay_sync(alex.clone(), &relay.addr))
        .await
        .unwrap();
    let grew = status("VmHWM:").saturating_sub(base);
    assert_eq!((report.fetched, report.skipped), (1, 1), "{report:?}");
    assert_eq!(heads(&alex), before, "nothing from the bomb was applied");
    // Automerge would have held the gigabyte two or three times over (and
    // aborted the process where that much memory is not to be had).
    assert!(grew < 128 << 20, "memory grew by {} MiB", grew >> 20);

    // `serve` with the relay, restarted twice: the bomb is behind the relay
    // cursor, so no start fetches it again, and honest edits keep arriving.
    let dir = dir_of(&alex);
    drop(alex);
    for round in 0..2 {
        let home: Shared = Arc::new(Mutex::new(Home::open(&dir).unwrap()));
        let server = start_serve_with(
            &home,
            duet::ServeOptions {
                relay: Some(relay.addr.clone()),
                poll: Duration::from_millis(50),
                ..duet::ServeOptions::new(loopback())
            },
        )
        .await;
        let title = format!("after the bomb, round {round}");
        add_issue(&sam, &title, "");
        within("sam's relay round", duet::relay_sync(sam.clone(), &relay.addr))
            .await
            .unwrap();
        assert!(
            wait_until(STEP, || has_title(&home, &title)).await,
            "the honest edit reached the serving home"
        );
        server.assert_alive(&home);
        server.stop().await;
    }
    relay.stop.send(true).unwrap();
    within("the relay to stop", relay.task).await.unwrap().unwrap();
}

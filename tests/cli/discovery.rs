//! LAN discovery between real processes: `duet serve` announces itself over
//! mDNS (on by default) and `duet sync` with no address finds it.
//!
//! The test first checks, without any of duet's code, that IP multicast
//! works here; where it does not, it prints "skipped: this network has no
//! multicast: ..." and passes (fails where `DUET_REQUIRE_MULTICAST` is set, as
//! `.ci/run` does). (crates/engine/tests/discovery.rs probes with
//! a raw mdns-sd round trip; mdns-sd is not a dependency of this test crate,
//! so this probe sends a UDP datagram to a multicast group, with loopback on,
//! and waits for it: the mechanism mDNS rides on.)

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{TestHome, couple, device_id, serve, titles};

/// A datagram sent to an administratively scoped multicast group on the
/// default interface comes back (multicast loopback) within 3 seconds.
fn multicast_probe() -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // A group and a payload unlikely to be shared with a parallel run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let token = format!("duet-probe-{}-{nanos}", std::process::id());
    let group = Ipv4Addr::new(239, 255, (nanos >> 8) as u8, (nanos | 1) as u8);
    let rx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| fail("cannot bind", e))?;
    let port = rx.local_addr().map_err(|e| fail("no local address", e))?.port();
    rx.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
        .map_err(|e| fail("cannot join a multicast group", e))?;
    rx.set_read_timeout(Some(Duration::from_millis(250)))
        .map_err(|e| fail("cannot set a timeout", e))?;
    let tx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| fail("cannot bind", e))?;
    tx.set_multicast_loop_v4(true)
        .map_err(|e| fail("cannot loop multicast back", e))?;
    tx.set_multicast_ttl_v4(1)
        .map_err(|e| fail("cannot set the TTL", e))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 128];
    let mut last = String::from("nothing came back");
    while Instant::now() < deadline {
        if let Err(e) = tx.send_to(token.as_bytes(), (group, port)) {
            last = format!("cannot send to {group}: {e}");
        }
        match rx.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == token.as_bytes() => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => last = format!("cannot receive: {e}"),
        }
    }
    Err(format!(
        "a datagram sent to the multicast group {group} did not come back within 3 s ({last})"
    ))
}

#[test]
fn sync_without_an_address_finds_the_partners_serve_on_the_local_network() {
    // With no remembered device, no relay and no discovery, there is no one
    // to sync with: a clear error. (The host of a pairing remembers no address.)
    let (alex, blair) = couple(|_| {});
    for h in [&alex, &TestHome::new()] {
        let err = h.fail(&["sync", "--no-discovery"]);
        assert!(
            err.starts_with("error: no device to sync with: give its address"),
            "{err}"
        );
        assert!(err.contains("--relay"), "{err}");
    }

    if let Err(why) = multicast_probe() {
        crate::util::skip(
            "DUET_REQUIRE_MULTICAST",
            &format!("this network has no multicast: {why}"),
        );
        return;
    }

    // Looking around finds no device of a lone home's space.
    let err = TestHome::new().fail(&["sync"]);
    assert!(err.contains("none was found on the local network"), "{err}");

    // Blair remembers only the pairing host's address, where nothing listens
    // now; Alex serves elsewhere, announcing itself (the default).
    let server = serve(&alex, &[]);
    alex.add_issue("Found on the local network");
    let start = Instant::now();
    let run = blair.run(&["sync", "--json"]);
    let took = start.elapsed();
    let stderr = run.stderr.clone();
    let out = run.success();
    let reports: Value = serde_json::from_str(&out).expect("sync --json gives JSON");
    let alex_id = device_id(&alex);
    let synced: Vec<&Value> = reports
        .as_array()
        .expect("an array of reports")
        .iter()
        .filter(|r| r["peer"] == alex_id.as_str())
        .collect();
    assert_eq!(
        synced.len(),
        1,
        "Alex's serve was not synced with: {reports:#}\n{stderr}"
    );
    assert!(
        synced[0]["changes_in"].as_u64().is_some_and(|n| n >= 1),
        "{reports:#}"
    );
    assert!(titles(&blair).contains("Found on the local network"));
    // The dead remembered address is only a note.
    for l in stderr.lines() {
        assert!(l.starts_with("note: could not reach "), "{stderr}");
    }
    eprintln!("sync by discovery took {took:?} (with a dead remembered address)");
    server.stop("TERM").success();
}

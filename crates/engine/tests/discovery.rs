//! LAN discovery over real mDNS on this machine: announcers and browsers are
//! separate mDNS daemons (as separate processes would be), talking multicast.
//!
//! Each test first checks, with a plain mdns-sd round trip that does not use
//! duet's code, that multicast works on the interfaces it needs; where it does
//! not, the test prints "skipped: this network has no multicast: ..." and
//! passes (fails where `DUET_REQUIRE_MULTICAST` is set, as `.ci/run` does). Every test uses fresh random space keys, so runs in parallel (or
//! other duet devices on the network) cannot be mistaken for its devices.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use duet::discovery::{
    Announcer, DiscoveryOptions, Found, Interfaces, SERVICE_TYPE, browse_devices, browse_with, device_marker,
    service_tag, today,
};
use duet::model::{DeviceId, DeviceSecret};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

/// How long a test polls for devices to show up before it fails.
const FIND: Duration = Duration::from_secs(30);

/// How long one browse listens (it returns earlier once it has found devices).
const BROWSE: Duration = Duration::from_secs(4);

fn loopback() -> DiscoveryOptions {
    DiscoveryOptions {
        interfaces: Interfaces::LoopbackOnly,
    }
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    key
}

fn device() -> DeviceId {
    DeviceSecret::from_bytes(&random_key()).device_id()
}

/// A raw mdns-sd round trip (no duet code): a service announced by one daemon
/// and resolved by another within 3 seconds, on loopback only or on every
/// interface. `Ok` holds the addresses it was resolved at.
fn multicast_probe(interfaces: Interfaces) -> Result<BTreeSet<IpAddr>, String> {
    let select = |d: &ServiceDaemon| -> Result<(), String> {
        if interfaces == Interfaces::LoopbackOnly {
            d.disable_interface(IfKind::All).map_err(|e| e.to_string())?;
            d.enable_interface(IfKind::LoopbackV4)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let ty = "_duetprobe._udp.local.";
    let name = hex(&random_key()[..8]);
    let host = format!("{name}.local.");
    let server = ServiceDaemon::new().map_err(|e| format!("no mDNS daemon: {e}"))?;
    let client = ServiceDaemon::new().map_err(|e| format!("no mDNS daemon: {e}"))?;
    let result = (|| {
        select(&server)?;
        select(&client)?;
        let mut info = ServiceInfo::new(
            ty,
            &name,
            &host,
            (),
            9,
            None::<std::collections::HashMap<String, String>>,
        )
        .map_err(|e| e.to_string())?
        .enable_addr_auto();
        info.set_requires_probe(false);
        if interfaces == Interfaces::LoopbackOnly {
            info.set_interfaces(vec![IfKind::LoopbackV4]);
        }
        let fullname = info.get_fullname().to_string();
        server.register(info).map_err(|e| e.to_string())?;
        let events = client.browse(ty).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(ServiceEvent::ServiceResolved(s)) if s.fullname == fullname => {
                    return Ok(s.addresses.iter().map(|a| a.to_ip_addr()).collect());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let scope = match interfaces {
            Interfaces::LoopbackOnly => "on the loopback interface",
            Interfaces::All => "on any interface",
        };
        Err(format!(
            "an mDNS service announced {scope} was not seen within 3 s"
        ))
    })();
    let _ = server.shutdown();
    let _ = client.shutdown();
    result
}

/// Runs the probe, printing why the test is skipped if multicast does not work.
fn multicast_or_skip(interfaces: Interfaces) -> Option<BTreeSet<IpAddr>> {
    match multicast_probe(interfaces) {
        Ok(addrs) => Some(addrs),
        Err(why) => {
            common::skip(
                "DUET_REQUIRE_MULTICAST",
                &format!("this network has no multicast: {why}"),
            );
            None
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ports(found: &[Found]) -> BTreeSet<u16> {
    found
        .iter()
        .flat_map(|f| f.addrs.iter().map(|a| a.port()))
        .collect()
}

/// Browses until the ports found are exactly `want` (failing at once if a port
/// outside `want` or `forbidden` ever shows up), for at most [`FIND`]. Returns
/// the last result and how long it took.
async fn browse_until(
    keys: &[[u8; 32]],
    me: &DeviceId,
    opts: &DiscoveryOptions,
    want: &BTreeSet<u16>,
) -> (Vec<Found>, Duration) {
    let started = Instant::now();
    loop {
        let found = browse_devices(keys, me, BROWSE, opts).await.unwrap();
        let got = ports(&found);
        assert!(got.is_subset(want), "found ports {got:?}, expected only {want:?}");
        for f in &found {
            assert!(!f.addrs.is_empty());
            let device_ports: BTreeSet<u16> = f.addrs.iter().map(|a| a.port()).collect();
            assert_eq!(device_ports.len(), 1, "one device, one port: {f:?}");
        }
        if got == *want {
            assert_eq!(found.len(), want.len(), "one entry per device: {found:?}");
            return (found, started.elapsed());
        }
        assert!(
            started.elapsed() < FIND,
            "after {FIND:?} found only ports {got:?} of {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_exactly_the_couples_devices() {
    if multicast_or_skip(Interfaces::LoopbackOnly).is_none() {
        return;
    }
    let opts = loopback();
    let (ours, theirs) = (random_key(), random_key());
    let (a, b, c, d) = (device(), device(), device(), device());
    let started = Instant::now();
    let _a = Announcer::start_with(&ours, &a, 41001, &opts).unwrap();
    let _b = Announcer::start_with(&ours, &b, 41002, &opts).unwrap();
    let _c = Announcer::start_with(&theirs, &c, 41003, &opts).unwrap();

    // A fourth device of the couple sees a and b, never c.
    let want: BTreeSet<u16> = [41001, 41002].into();
    let (found, took) = browse_until(&[ours], &d, &opts, &want).await;
    eprintln!(
        "found both devices of the couple in {took:?} ({:?} after the announcers started)",
        started.elapsed()
    );
    for f in &found {
        assert!(
            f.addrs.iter().all(|a| a.ip() == IpAddr::from([127, 0, 0, 1])),
            "{f:?}"
        );
    }

    // The flat list: every address once, with the right ports.
    let addrs = browse_with(&[ours], &d, BROWSE, &opts).await.unwrap();
    let flat: BTreeSet<SocketAddr> = addrs.iter().copied().collect();
    assert_eq!(flat.len(), addrs.len(), "no duplicates: {addrs:?}");
    assert!(
        flat.is_subset(
            &[
                "127.0.0.1:41001".parse().unwrap(),
                "127.0.0.1:41002".parse().unwrap()
            ]
            .into()
        ),
        "{addrs:?}"
    );

    // The other couple's device is found with the other key, and only with it;
    // a device holding both keys finds all three.
    browse_until(&[theirs], &d, &opts, &[41003].into()).await;
    browse_until(&[theirs, ours], &d, &opts, &[41001, 41002, 41003].into()).await;

    // A key nobody announces finds nothing (and waits the whole time to say so).
    let t = Instant::now();
    let none = browse_devices(&[random_key()], &d, Duration::from_secs(2), &opts)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    assert!(t.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_skips_its_own_announcement() {
    if multicast_or_skip(Interfaces::LoopbackOnly).is_none() {
        return;
    }
    let opts = loopback();
    let key = random_key();
    let (a, b) = (device(), device());
    let _a = Announcer::start_with(&key, &a, 41011, &opts).unwrap();
    let _b = Announcer::start_with(&key, &b, 41012, &opts).unwrap();
    // Each sees the other and never itself (browse_until fails on any other port).
    browse_until(&[key], &a, &opts, &[41012].into()).await;
    browse_until(&[key], &b, &opts, &[41011].into()).await;
    // Its own marker is skipped whatever other keys it holds.
    browse_until(&[random_key(), key], &a, &opts, &[41012].into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announcement_follows_the_day() {
    if multicast_or_skip(Interfaces::LoopbackOnly).is_none() {
        return;
    }
    let opts = loopback();
    let key = random_key();
    let (a, b, me) = (device(), device(), device());
    let now = today();
    let a_ann = Announcer::start_with(&key, &a, 41021, &opts).unwrap();
    let _b = Announcer::start_with(&key, &b, 41022, &opts).unwrap();
    assert_eq!(a_ann.day(), Some(now));
    browse_until(&[key], &me, &opts, &[41021, 41022].into()).await;

    // Two days ahead is out of the browser's window (yesterday..tomorrow): a's
    // old announcement is withdrawn and its new one ignored, while b, found in
    // the same browses, shows that the browsing works.
    let later = now.tomorrow().unwrap().tomorrow().unwrap();
    a_ann.announce_for(later).unwrap();
    assert_eq!(a_ann.day(), Some(later));
    let started = Instant::now();
    loop {
        let found = browse_devices(&[key], &me, BROWSE, &opts).await.unwrap();
        let got = ports(&found);
        if got == [41022].into() {
            break;
        }
        // The goodbye may race with the first browse.
        assert!(
            started.elapsed() < FIND,
            "a still found after it moved to {later}: {got:?}"
        );
    }

    // A clock one day ahead is within the window.
    a_ann.announce_for(now.tomorrow().unwrap()).unwrap();
    browse_until(&[key], &me, &opts, &[41021, 41022].into()).await;
    // And back to today.
    a_ann.refresh().unwrap();
    assert_eq!(a_ann.day(), Some(now));
    browse_until(&[key], &me, &opts, &[41021, 41022].into()).await;

    // Stopped: its announcement is withdrawn.
    a_ann.stop();
    browse_until(&[key], &me, &opts, &[41022].into()).await;
}

/// What other people on the network see: a raw mdns-sd browse of duet's
/// service type, as any device on the network could do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announcement_says_nothing_about_the_couple() {
    if multicast_or_skip(Interfaces::LoopbackOnly).is_none() {
        return;
    }
    let opts = loopback();
    let key = random_key();
    let a = device();
    let _a = Announcer::start_with(&key, &a, 41031, &opts).unwrap();
    let tag = service_tag(&key, today());
    let marker = device_marker(&key, today(), &a);

    let observer = ServiceDaemon::new().unwrap();
    observer.disable_interface(IfKind::All).unwrap();
    observer.enable_interface(IfKind::LoopbackV4).unwrap();
    let events = observer.browse(SERVICE_TYPE).unwrap();
    let deadline = Instant::now() + FIND;
    let seen = loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the announcement was never seen");
        if let Ok(Ok(ServiceEvent::ServiceResolved(s))) =
            tokio::time::timeout(left, events.recv_async()).await
            && s.fullname.starts_with(&tag)
        {
            break s;
        }
    };
    let _ = observer.shutdown();

    assert_eq!(seen.fullname, format!("{tag}-{marker}.{SERVICE_TYPE}"));
    assert_eq!(seen.host, format!("{marker}.local."));
    assert_eq!(seen.port, 41031);
    let mut props: Vec<(String, String)> = seen
        .txt_properties
        .iter()
        .map(|p| (p.key().to_string(), p.val_str().to_string()))
        .collect();
    props.sort();
    assert_eq!(
        props,
        vec![
            ("d".to_string(), marker.clone()),
            ("v".to_string(), "1".to_string())
        ]
    );

    // Nothing that names the device, the key or the machine.
    let everything = format!("{} {} {:?}", seen.fullname, seen.host, props).to_lowercase();
    assert!(!everything.contains(&a.to_string()[..8]), "{everything}");
    assert!(!everything.contains(&hex(&key[..4])), "{everything}");
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let hostname = hostname.trim().to_lowercase();
        let first = hostname.split('.').next().unwrap_or_default();
        if first.len() >= 3 {
            assert!(
                !everything.contains(first),
                "the machine's host name {first} leaks: {everything}"
            );
        }
    }
}

/// The default options: every interface, loopback included. Where the
/// machine's own LAN address takes multicast too, the partner is found there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_on_every_interface_by_default() {
    let Some(probe) = multicast_or_skip(Interfaces::All) else {
        return;
    };
    let lan: BTreeSet<IpAddr> = probe
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
        .collect();
    eprintln!("mDNS round trip on every interface resolved {probe:?}");
    let opts = DiscoveryOptions::default();
    let key = random_key();
    let (a, me) = (device(), device());
    let _a = Announcer::start(&key, &a, 41041).unwrap();
    let started = Instant::now();
    let found = loop {
        let found = browse_devices(&[key], &me, BROWSE, &opts).await.unwrap();
        assert!(found.len() <= 1, "{found:?}");
        let addrs: BTreeSet<IpAddr> = found
            .iter()
            .flat_map(|f| f.addrs.iter().map(|a| a.ip()))
            .collect();
        if found.len() == 1 && lan.is_subset(&addrs) && addrs.contains(&IpAddr::from([127, 0, 0, 1])) {
            break found;
        }
        assert!(
            started.elapsed() < FIND,
            "found {found:?}, expected loopback and {lan:?}"
        );
    };
    eprintln!(
        "found on every interface in {:?}: {:?}",
        started.elapsed(),
        found[0].addrs
    );
    let addrs = &found[0].addrs;
    assert!(addrs.iter().all(|a| a.port() == 41041), "{addrs:?}");
    // IPv4 first.
    let first_v6 = addrs.iter().position(|a| a.is_ipv6()).unwrap_or(addrs.len());
    assert!(addrs[first_v6..].iter().all(|a| a.is_ipv6()), "{addrs:?}");
    // Link-local IPv6 addresses carry their interface.
    for a in addrs {
        if let SocketAddr::V6(v6) = a
            && v6.ip().segments()[0] & 0xffc0 == 0xfe80
        {
            assert_ne!(v6.scope_id(), 0, "{a}");
        }
    }
}

/// Two paired devices running `serve` with discovery find each other on the
/// network (here: loopback) and keep a live session without any address
/// given: an edit on one shows up on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_find_each_other_and_stay_in_sync() {
    if multicast_or_skip(Interfaces::LoopbackOnly).is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let sam = common::init(root.path(), "Sam", "laptop");
    let alex = common::init(root.path(), "Alex", "phone");
    common::pair(&sam, &alex, false).await;
    let with_discovery = || duet::ServeOptions {
        discovery: true,
        poll: Duration::from_millis(50),
        ..duet::ServeOptions::new(common::loopback())
    };
    let sam_serve = common::start_serve_with(&sam, with_discovery()).await;
    let alex_serve = common::start_serve_with(&alex, with_discovery()).await;
    common::add_issue(&sam, "Found on the network", "no address typed");
    common::add_issue(&alex, "Found the other way", "still no address");
    let both = common::wait_until(Duration::from_secs(40), || {
        common::has_title(&alex, "Found on the network") && common::has_title(&sam, "Found the other way")
    })
    .await;
    assert!(both, "the two serves did not find each other");
    // A later edit travels over the live session.
    common::add_issue(&alex, "Live over the found session", "");
    assert!(
        common::wait_until(Duration::from_secs(20), || common::has_title(
            &sam,
            "Live over the found session"
        ))
        .await
    );
    sam_serve.stop().await;
    alex_serve.stop().await;
}

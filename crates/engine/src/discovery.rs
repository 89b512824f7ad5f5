//! LAN discovery: paired devices find each other on the local network over
//! mDNS / DNS-SD, without telling anyone else on that network who they are.
//!
//! # What is announced
//! A device that serves announces one DNS-SD service of type `_duet._udp.local.`:
//!
//! - **instance name** `<tag>-<marker>`, where `<tag>` is [`service_tag`]: the
//!   first 10 bytes of `HMAC-SHA256(space key, "duet/mdns/v1:" || YYYY-MM-DD)`
//!   (today's UTC date), and `<marker>` is [`device_marker`]: 8 bytes of
//!   `HMAC-SHA256(space key, "duet/mdns-device/v1:" || YYYY-MM-DD || device id)`,
//!   both in lowercase hex;
//! - **host name** `<marker>.local.`, never the machine's own host name (which
//!   often holds a person's name, "sams-phone");
//! - the **port** `serve` listens on and the device's **addresses** on every
//!   interface (each interface answers with its own addresses, kept up to date
//!   as they change);
//! - **TXT** `d=<marker>` and `v=1`.
//!
//! # Why it does not identify the couple
//! No name, no space id, no device key and no key id appears in the
//! announcement. The tag and the marker are keyed hashes under the space key,
//! which only the couple's member devices hold: nobody else can compute them,
//! link them to a space, or tell two days' announcements of the same couple
//! apart from two unrelated ones, because both change every day (at midnight
//! UTC, so that two phones set to different time zones agree). What an observer
//! of the network does learn: that some device runs duet at that address, and
//! that the devices announcing the same tag on the same day belong together,
//! which it could also guess from their traffic.
//!
//! The marker gives each device its own instance and host name (two devices of
//! the couple on one network would otherwise claim the same names, and mDNS
//! would rename or merge them), and lets a device skip its own announcement
//! without saying which device it is.
//!
//! # Finding the couple's devices
//! [`browse`] listens for `_duet._udp.local.` instances for a short while and
//! keeps those whose tag is one of [`tags_around`] (yesterday, today and
//! tomorrow for every space key this device holds, to tolerate clock skew
//! between phones) and whose marker is not this device's own. Everything else
//! on the network (other couples, other apps) is ignored. The addresses found
//! are only a hint: the sync connection that follows authenticates both
//! devices with their device keys, as for an address given by hand.
//!
//! The space key itself is never logged; tags and markers only at debug level.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use duet_model::DeviceId;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use jiff::civil::Date;
use mdns_sd::{IfKind, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The DNS-SD service type duet announces and browses.
pub const SERVICE_TYPE: &str = "_duet._udp.local.";

/// The announcement format, in the TXT record's `v`.
pub const ANNOUNCEMENT_VERSION: &str = "1";

/// How many bytes of the HMAC make the tag (20 hex digits).
const TAG_BYTES: usize = 10;

/// How many bytes of the HMAC make the device marker (16 hex digits).
const MARKER_BYTES: usize = 8;

/// How long [`browse`] keeps listening after the last new device or address,
/// once it has found at least one.
pub const QUIET_AFTER_FOUND: Duration = Duration::from_millis(300);

/// How often an [`Announcer`] checks whether the UTC date has changed.
const DAY_CHECK: Duration = Duration::from_secs(30);

/// How long [`Announcer::stop`] waits for the mDNS daemon to say goodbye.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Why LAN discovery failed. The text is a sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon could not start.
    #[error("cannot start LAN discovery: {0}")]
    Start(String),
    /// The announcement was refused.
    #[error("cannot announce this device on the local network: {0}")]
    Announce(String),
    /// Browsing failed.
    #[error("cannot look for paired devices on the local network: {0}")]
    Browse(String),
}

/// Which network interfaces discovery uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface that is up, loopback included (the default).
    #[default]
    All,
    /// Only the IPv4 loopback interface (127.0.0.1): for tests that run several
    /// devices on one machine, so their announcements never leave it.
    LoopbackOnly,
}

/// Options of [`Announcer::start_with`] and [`browse_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Which interfaces to announce and browse on.
    pub interfaces: Interfaces,
}

/// Today's date in UTC, the date tags are computed for.
pub fn today() -> Date {
    jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
}

/// The mDNS tag of a space for one day: lowercase hex of the first 10 bytes of
/// `HMAC-SHA256(space_key, "duet/mdns/v1:" || "YYYY-MM-DD")`.
pub fn service_tag(space_key: &[u8; 32], day: Date) -> String {
    let mac = hmac(space_key, &[b"duet/mdns/v1:", day_text(day).as_bytes()]);
    hex(&mac[..TAG_BYTES])
}

/// The tags of every key for yesterday, today and tomorrow (relative to
/// `today`): what [`browse`] accepts, so that devices whose clocks disagree
/// around midnight still find each other.
pub fn tags_around(keys: &[[u8; 32]], today: Date) -> HashSet<String> {
    let days = days_around(today);
    keys.iter()
        .flat_map(|key| days.iter().map(move |day| service_tag(key, *day)))
        .collect()
}

/// A device's marker for one day: lowercase hex of the first 8 bytes of
/// `HMAC-SHA256(space_key, "duet/mdns-device/v1:" || "YYYY-MM-DD" || device)`.
/// Only holders of the space key who know the device id can recognise it.
pub fn device_marker(space_key: &[u8; 32], day: Date, device: &DeviceId) -> String {
    let mac = hmac(
        space_key,
        &[
            b"duet/mdns-device/v1:",
            day_text(day).as_bytes(),
            device.as_bytes(),
        ],
    );
    hex(&mac[..MARKER_BYTES])
}

/// `day` as `YYYY-MM-DD`.
pub(crate) fn day_text(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day())
}

/// Yesterday, today and tomorrow (fewer at the ends of the calendar).
pub(crate) fn days_around(today: Date) -> Vec<Date> {
    [today.yesterday().ok(), Some(today), today.tomorrow().ok()]
        .into_iter()
        .flatten()
        .collect()
}

pub(crate) fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC zero-pads a short key to the block size (RFC 2104), so padding here
    // gives the same MAC through the constructor that cannot fail.
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A new mDNS daemon on the interfaces `opts` selects.
fn daemon(opts: &DiscoveryOptions) -> Result<ServiceDaemon, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError::Start(e.to_string()))?;
    if opts.interfaces == Interfaces::LoopbackOnly {
        // Selections apply in order: drop everything, then take loopback back.
        let selected = daemon
            .disable_interface(IfKind::All)
            .and_then(|()| daemon.enable_interface(IfKind::LoopbackV4));
        if let Err(e) = selected {
            let _ = daemon.shutdown();
            return Err(DiscoveryError::Start(e.to_string()));
        }
    }
    Ok(daemon)
}

/// Announces this device on the local network while it lives (see the
/// [module documentation](self) for what is announced).
///
/// The announcement follows the date: a background thread checks the UTC date
/// every 30 seconds and, when it has changed, withdraws the old announcement and
/// makes one under the new day's tag. [`Announcer::refresh`] does the same at
/// once. Dropping the announcer (or [`Announcer::stop`]) withdraws the
/// announcement (mDNS "goodbye" packets) and stops the mDNS daemon.
pub struct Announcer {
    state: Arc<State>,
    /// Dropped to stop the day-watching thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key; the day and port say what is announced without the tag.
        f.debug_struct("Announcer")
            .field("port", &self.state.port)
            .field("day", &self.day())
            .finish()
    }
}

struct State {
    daemon: ServiceDaemon,
    key: Zeroizing<[u8; 32]>,
    me: DeviceId,
    port: u16,
    opts: DiscoveryOptions,
    /// The day currently announced and the instance's full name.
    current: Mutex<Option<(Date, String)>>,
}

impl State {
    /// Announces under `day`'s tag, withdrawing any other day's announcement.
    fn announce(&self, day: Date) -> Result<(), DiscoveryError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(d, _)| *d == day) {
            return Ok(());
        }
        let tag = service_tag(&self.key, day);
        let marker = device_marker(&self.key, day, &self.me);
        let instance = format!("{tag}-{marker}");
        let host = format!("{marker}.local.");
        let properties = [("d", marker.as_str()), ("v", ANNOUNCEMENT_VERSION)];
        // mdns-sd's messages may quote the names: keep the tag out of errors.
        let refused = |e: mdns_sd::Error| {
            DiscoveryError::Announce(e.to_string().replace(&tag, "<tag>").replace(&marker, "<marker>"))
        };
        let mut info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, (), self.port, &properties[..])
            .map_err(refused)?
            .enable_addr_auto();
        if self.opts.interfaces == Interfaces::LoopbackOnly {
            info.set_interfaces(vec![IfKind::LoopbackV4]);
        }
        let fullname = info.get_fullname().to_string();
        if let Some((_, old)) = current.take() {
            // Goodbye packets for yesterday's name; the answer is not needed.
            if let Err(e) = self.daemon.unregister(&old) {
                tracing::debug!(error = %e, "could not withdraw the previous LAN announcement");
            }
        }
        self.daemon.register(info).map_err(refused)?;
        tracing::debug!(%tag, %marker, port = self.port, "announcing on the local network");
        *current = Some((day, fullname));
        Ok(())
    }
}

impl Announcer {
    /// The marker this device announces today (the `d` property), if it is
    /// announcing.
    pub fn marker(&self) -> Option<String> {
        self.day()
            .map(|day| device_marker(&self.state.key, day, &self.state.me))
    }

    /// Starts announcing this device (`me`, serving on `port`) for the space
    /// whose key is `space_key`, on every interface. Use the space's sealing key
    /// (the newest held): a device that holds newer keys still finds this one,
    /// since [`browse`] tries every held key.
    pub fn start(space_key: &[u8; 32], me: &DeviceId, port: u16) -> Result<Announcer, DiscoveryError> {
        Announcer::start_with(space_key, me, port, &DiscoveryOptions::default())
    }

    /// [`Announcer::start`] with options.
    pub fn start_with(
        space_key: &[u8; 32],
        me: &DeviceId,
        port: u16,
        opts: &DiscoveryOptions,
    ) -> Result<Announcer, DiscoveryError> {
        let state = Arc::new(State {
            daemon: daemon(opts)?,
            key: Zeroizing::new(*space_key),
            me: *me,
            port,
            opts: *opts,
            current: Mutex::new(None),
        });
        let day = today();
        if let Err(e) = state.announce(day) {
            let _ = state.daemon.shutdown();
            return Err(e);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = state.clone();
        let thread = std::thread::Builder::new()
            .name("duet-mdns-day".into())
            .spawn(move || watch_the_date(&watched, &stopped, day, &today, DAY_CHECK));
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                let _ = state.daemon.shutdown();
                return Err(DiscoveryError::Start(format!("cannot start a thread: {e}")));
            }
        };
        Ok(Announcer {
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Announces under today's tag now if the date has changed since the last
    /// announcement (the background thread does this within 30 seconds anyway).
    pub fn refresh(&self) -> Result<(), DiscoveryError> {
        self.state.announce(today())
    }

    /// Announces under `day`'s tag instead of today's, until the date next
    /// changes: what [`Announcer::refresh`] does, with the date given. For
    /// tests of the daily change.
    pub fn announce_for(&self, day: Date) -> Result<(), DiscoveryError> {
        self.state.announce(day)
    }

    /// The day whose tag is announced.
    pub fn day(&self) -> Option<Date> {
        self.state
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(d, _)| *d)
    }

    /// Withdraws the announcement and stops the mDNS daemon, waiting (at most
    /// two seconds) until the goodbye packets are sent.
    pub fn stop(mut self) {
        self.halt(true);
    }

    fn halt(&mut self, wait: bool) {
        // Closing the channel wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The daemon sends goodbyes for every registered service as it shuts down.
        match self.state.daemon.shutdown() {
            Ok(status) if wait => {
                let _ = status.recv_timeout(STOP_WAIT);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "the mDNS daemon had already stopped"),
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt(false);
        }
    }
}

/// The announcer's thread: re-announces when the date `clock` gives differs
/// from `seen` (the day announced at start), checking every `tick`, until
/// `stopped` closes. It reacts to a change of the date itself, so a day set by
/// [`Announcer::announce_for`] stays until the next midnight.
fn watch_the_date(
    state: &State,
    stopped: &mpsc::Receiver<()>,
    mut seen: Date,
    clock: &dyn Fn() -> Date,
    tick: Duration,
) {
    let mut warned = false;
    loop {
        match stopped.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = clock();
        if now != seen {
            match state.announce(now) {
                Ok(()) => {
                    seen = now;
                    warned = false;
                }
                // Tried again at the next tick.
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "could not renew the LAN announcement for the new day");
                }
                Err(e) => tracing::debug!(error = %e, "could not renew the LAN announcement"),
            }
        }
    }
}

/// A device found on the local network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its addresses with its port: IPv4 first, then IPv6 (link-local IPv6
    /// addresses carry their interface's scope id).
    pub addrs: Vec<SocketAddr>,
    /// Its marker (the `d` property): stable for the day, and comparable with
    /// [`Announcer::marker`] to decide which of two devices dials.
    pub marker: String,
}

/// Looks for the couple's other devices on the local network for up to `wait`
/// and returns their addresses (every address of every device found, IPv4
/// first, without duplicates). `keys` are the space keys this device holds,
/// `me` this device, whose own announcement is skipped.
///
/// Returns early once at least one device has been found and no new device or
/// address has come for [`QUIET_AFTER_FOUND`]. Finding nothing is not an error.
pub async fn browse(
    keys: &[[u8; 32]],
    me: &DeviceId,
    wait: Duration,
) -> Result<Vec<SocketAddr>, DiscoveryError> {
    browse_with(keys, me, wait, &DiscoveryOptions::default()).await
}

/// [`browse`] with options.
pub async fn browse_with(
    keys: &[[u8; 32]],
    me: &DeviceId,
    wait: Duration,
    opts: &DiscoveryOptions,
) -> Result<Vec<SocketAddr>, DiscoveryError> {
    let found = browse_devices(keys, me, wait, opts).await?;
    let mut addrs: Vec<SocketAddr> = found.into_iter().flat_map(|f| f.addrs).collect();
    // Stable: each device's order is kept within each family.
    addrs.sort_by_key(|a| a.is_ipv6());
    let mut seen = HashSet::new();
    addrs.retain(|a| seen.insert(*a));
    Ok(addrs)
}

/// [`browse_with`], keeping each device's addresses together: for a caller that
/// wants to reach every device once, trying its addresses in turn.
pub async fn browse_devices(
    keys: &[[u8; 32]],
    me: &DeviceId,
    wait: Duration,
    opts: &DiscoveryOptions,
) -> Result<Vec<Found>, DiscoveryError> {
    let day = today();
    let tags = tags_around(keys, day);
    let mine: HashSet<String> = keys
        .iter()
        .flat_map(|key| {
            days_around(day)
                .into_iter()
                .map(move |d| device_marker(key, d, me))
        })
        .collect();

    let daemon = Daemon(daemon(opts)?);
    let events = daemon
        .0
        .browse(SERVICE_TYPE)
        .map_err(|e| DiscoveryError::Browse(e.to_string()))?;

    // Instance full name -> (port, addresses, marker).
    let mut devices: BTreeMap<String, (u16, BTreeSet<SocketAddr>, String)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        let until = quiet_until.map_or(deadline, |q| q.min(deadline));
        let event = match tokio::time::timeout_at(until, events.recv_async()).await {
            Err(_) => break,
            // The daemon stopped: nothing more will come.
            Ok(Err(_)) => break,
            Ok(Ok(event)) => event,
        };
        let service = match event {
            ServiceEvent::ServiceResolved(service) => service,
            // Said goodbye (stopped, or moved to the next day's tag).
            ServiceEvent::ServiceRemoved(_, fullname) => {
                devices.remove(&fullname);
                continue;
            }
            _ => continue,
        };
        let Some(instance) = service.fullname.strip_suffix(&format!(".{SERVICE_TYPE}")) else {
            continue;
        };
        // The tag leads the instance name (mDNS may have appended " (2)" to a
        // name that clashed); the TXT record says whose it is.
        let Some(tag) = instance.get(..TAG_BYTES * 2) else {
            continue;
        };
        if !tags.contains(tag) {
            continue;
        }
        if service.get_property_val_str("v") != Some(ANNOUNCEMENT_VERSION) {
            tracing::debug!(%instance, "skipping an announcement of another format");
            continue;
        }
        let marker = match service.get_property_val_str("d") {
            Some(marker) if !mine.contains(marker) => marker.to_string(),
            _ => continue,
        };
        let port = service.port;
        let addrs: Vec<SocketAddr> = service
            .addresses
            .iter()
            .filter_map(|ip| socket_addr(ip, port))
            .collect();
        let entry = devices
            .entry(service.fullname.clone())
            .or_insert_with(|| (port, BTreeSet::new(), marker.clone()));
        if entry.0 != port {
            // The device restarted on another port: its old addresses are stale.
            *entry = (port, BTreeSet::new(), marker);
        }
        let mut new = false;
        for addr in addrs {
            new |= entry.1.insert(addr);
        }
        if new {
            tracing::debug!(%instance, port, "found a paired device on the local network");
            quiet_until = Some(tokio::time::Instant::now() + QUIET_AFTER_FOUND);
        }
    }
    let _ = daemon.0.stop_browse(SERVICE_TYPE);

    Ok(devices
        .into_values()
        .filter(|(_, addrs, _)| !addrs.is_empty())
        .map(|(_, addrs, marker)| {
            let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
            addrs.sort_by_key(|a| (a.is_ipv6(), is_link_local(a)));
            Found { addrs, marker }
        })
        .collect())
}

/// Shuts its mDNS daemon down when dropped, also when a browse is cancelled.
struct Daemon(ServiceDaemon);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// An address to dial, or `None` for a link-local IPv6 address without its
/// interface (which cannot be dialled).
fn socket_addr(ip: &ScopedIp, port: u16) -> Option<SocketAddr> {
    match ip {
        ScopedIp::V4(v4) => Some(SocketAddr::V4(SocketAddrV4::new(*v4.addr(), port))),
        ScopedIp::V6(v6) => {
            let addr = *v6.addr();
            let scope = if is_unicast_link_local(&addr) {
                v6.scope_id().index
            } else {
                0
            };
            if is_unicast_link_local(&addr) && scope == 0 {
                return None;
            }
            Some(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope)))
        }
        other => {
            let ip: IpAddr = other.to_ip_addr();
            match ip {
                IpAddr::V4(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                IpAddr::V6(v6) if !is_unicast_link_local(&v6) => {
                    Some(SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)))
                }
                IpAddr::V6(_) => None,
            }
        }
    }
}

/// fe80::/10.
fn is_unicast_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

fn is_link_local(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().is_link_local(),
        SocketAddr::V6(a) => is_unicast_link_local(a.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn device(seed: u8) -> DeviceId {
        duet_model::DeviceSecret::from_bytes(&[seed; 32]).device_id()
    }

    #[test]
    fn tag_is_the_hmac_of_the_day_under_the_space_key() {
        let key = [7u8; 32];
        let d = day("2025-03-09");
        // Computed independently of `hmac()`: through the variable-length constructor.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"duet/mdns/v1:2025-03-09");
        let want = hex(&mac.finalize().into_bytes()[..10]);
        assert_eq!(service_tag(&key, d), want);
        assert_eq!(service_tag(&key, d).len(), 20);
        assert!(
            service_tag(&key, d)
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        // Stable.
        assert_eq!(service_tag(&key, d), service_tag(&key, day("2025-03-09")));
    }

    #[test]
    fn tag_changes_with_the_day_and_the_key() {
        let key = [7u8; 32];
        let mut other = key;
        other[31] ^= 1;
        let d = day("2025-12-31");
        assert_ne!(service_tag(&key, d), service_tag(&key, day("2026-01-01")));
        assert_ne!(service_tag(&key, d), service_tag(&key, day("2024-12-31")));
        assert_ne!(service_tag(&key, d), service_tag(&other, d));
        // A year of days gives a year of distinct tags.
        let mut tags = HashSet::new();
        let mut x = day("2025-01-01");
        for _ in 0..365 {
            tags.insert(service_tag(&key, x));
            x = x.tomorrow().unwrap();
        }
        assert_eq!(tags.len(), 365);
    }

    #[test]
    fn tag_is_not_derived_from_anything_public() {
        // Without the key, the public inputs (the label, the date) give nothing:
        // not a plain hash of them, not an HMAC under an empty or zero key.
        let d = day("2025-03-09");
        let key = [42u8; 32];
        let tag = service_tag(&key, d);
        use sha2::Digest;
        let plain = Sha256::digest(b"duet/mdns/v1:2025-03-09");
        assert_ne!(tag, hex(&plain[..10]));
        assert_ne!(tag, service_tag(&[0u8; 32], d));
        let mut empty = <Hmac<Sha256> as Mac>::new_from_slice(b"").unwrap();
        empty.update(b"duet/mdns/v1:2025-03-09");
        assert_ne!(tag, hex(&empty.finalize().into_bytes()[..10]));
        // Nor does it contain the date or the key in any visible form.
        assert!(!tag.contains("2025"));
        assert!(!tag.contains(&hex(&key[..4])));
    }

    #[test]
    fn tags_around_cover_three_days_per_key() {
        let keys = [[1u8; 32], [2u8; 32]];
        let d = day("2025-03-01");
        let tags = tags_around(&keys, d);
        assert_eq!(tags.len(), 6);
        for key in &keys {
            for x in ["2025-02-28", "2025-03-01", "2025-03-02"] {
                assert!(tags.contains(&service_tag(key, day(x))), "{x}");
            }
            assert!(!tags.contains(&service_tag(key, day("2025-02-27"))));
            assert!(!tags.contains(&service_tag(key, day("2025-03-03"))));
        }
        assert!(tags_around(&[], d).is_empty());
        // The first day of the calendar has no yesterday.
        assert_eq!(tags_around(&keys[..1], Date::MIN).len(), 2);
    }

    #[test]
    fn device_marker_is_per_device_day_and_key() {
        let key = [9u8; 32];
        let (a, b) = (device(1), device(2));
        let d = day("2025-06-01");
        let m = device_marker(&key, d, &a);
        assert_eq!(m.len(), 16);
        assert_eq!(m, device_marker(&key, day("2025-06-01"), &a));
        assert_ne!(m, device_marker(&key, d, &b));
        assert_ne!(m, device_marker(&key, day("2025-06-02"), &a));
        assert_ne!(m, device_marker(&[8u8; 32], d, &a));
        // Not the device id, nor a prefix of it, nor of the tag.
        assert!(!a.to_string().contains(&m));
        assert!(!service_tag(&key, d).starts_with(&m[..8]));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"duet/mdns-device/v1:2025-06-01");
        mac.update(a.as_bytes());
        assert_eq!(m, hex(&mac.finalize().into_bytes()[..8]));
    }

    /// The announcer's thread moves the announcement to the new day when the
    /// clock passes midnight, and leaves a day set by hand alone until then.
    #[test]
    fn the_announcement_moves_to_the_new_day() {
        let opts = DiscoveryOptions {
            interfaces: Interfaces::LoopbackOnly,
        };
        let state = Arc::new(State {
            daemon: daemon(&opts).unwrap(),
            key: Zeroizing::new([3u8; 32]),
            me: device(1),
            port: 41999,
            opts,
            current: Mutex::new(None),
        });
        let d0 = day("2025-12-31");
        let clock = Arc::new(Mutex::new(d0));
        state.announce(d0).unwrap();
        let (stop, stopped) = mpsc::channel::<()>();
        let (watched, c) = (state.clone(), clock.clone());
        let thread = std::thread::spawn(move || {
            watch_the_date(
                &watched,
                &stopped,
                d0,
                &|| *c.lock().unwrap(),
                Duration::from_millis(5),
            )
        });
        let announced = || state.current.lock().unwrap().clone();
        let wait_for = |want: Date| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while announced().map(|(d, _)| d) != Some(want) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still {:?}, want {want}",
                    announced()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let (_, name0) = announced().unwrap();
        assert!(name0.starts_with(&service_tag(&[3u8; 32], d0)), "{name0}");

        *clock.lock().unwrap() = day("2026-01-01");
        wait_for(day("2026-01-01"));
        let (_, name1) = announced().unwrap();
        assert!(
            name1.starts_with(&service_tag(&[3u8; 32], day("2026-01-01"))),
            "{name1}"
        );
        assert_ne!(name0, name1);

        // A day set by hand stays while the date does not change (many ticks).
        state.announce(day("2026-03-01")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(announced().map(|(d, _)| d), Some(day("2026-03-01")));
        *clock.lock().unwrap() = day("2026-01-02");
        wait_for(day("2026-01-02"));

        drop(stop);
        thread.join().unwrap();
        let _ = state.daemon.shutdown();
    }

    #[test]
    fn day_text_is_iso() {
        assert_eq!(day_text(day("2025-03-09")), "2025-03-09");
        assert_eq!(day_text(day("0999-12-01")), "0999-12-01");
    }

    #[test]
    fn link_local_ipv6_needs_its_scope() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        assert!(is_unicast_link_local(&ll));
        assert!(!is_unicast_link_local(&"fd00::2".parse().unwrap()));
        assert!(!is_unicast_link_local(&"::1".parse().unwrap()));
        let unscoped = ScopedIp::from(IpAddr::V6(ll));
        assert_eq!(socket_addr(&unscoped, 9), None);
        let global = ScopedIp::from(IpAddr::V6("fd00::2".parse().unwrap()));
        assert_eq!(socket_addr(&global, 9), Some("[fd00::2]:9".parse().unwrap()));
        let v4 = ScopedIp::from(IpAddr::V4("192.0.2.7".parse().unwrap()));
        assert_eq!(socket_addr(&v4, 9), Some("192.0.2.7:9".parse().unwrap()));
    }
}

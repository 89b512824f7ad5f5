//! Where a relay keeps access lists, bundles and acknowledgements.
//!
//! [`RelayStore`] is deliberately small: a handful of per-space operations
//! that a key-value or object store can serve, so that a relay for many
//! couples can later sit on an existing distributed object store.
//! [`SqliteRelayStore`] is the default (one embedded database file);
//! [`MemoryRelayStore`] keeps everything in memory, for tests and for a relay
//! started without a data folder.
//!
//! # On an object store
//! Everything is keyed by space tag, and no operation spans two spaces except
//! [`RelayStore::expire`] with no space (which can run space by space):
//!
//! | object | holds | written with |
//! | --- | --- | --- |
//! | `spaces/<tag>/access` | the signed access list ([`SignedAccess::to_bytes`]), with its [`Registrant`] as object metadata | a conditional put (if-match the version read, or if-none-match for a new space): [`RelayStore::set_access`]'s `replaces` |
//! | `registrants/<device>/<tag>`, `sources/<source>/<tag>` | nothing: a marker per registered space | a plain put after the space's `access` is won |
//! | `usage` | bytes of bundles and access lists kept, over all spaces | a compare-and-swap, like `seq` |
//! | `spaces/<tag>/seq` | the last sequence number given out | a conditional put (compare-and-swap from the value read), retried on conflict: two relay nodes never hand out one number twice |
//! | `spaces/<tag>/bundles/<seq>` | one bundle, with its poster and post time as object metadata; `<seq>` zero-padded to 20 digits so listing is in order | a plain put after the seq is won |
//! | `spaces/<tag>/acks/<device>` | the highest seq the device acknowledged | a conditional put that only raises it |
//!
//! [`RelayStore::fetch`] is a listing of `bundles/` starting after
//! `<after>`; [`RelayStore::usage`] sums the listed sizes (or keeps a counter
//! object); retention is a lifecycle rule on `bundles/` or the same listing
//! by age; delivered bundles are deleted by listing them against the acks.
//! [`RelayStore::registered`] counts the two marker listings. The quota,
//! storage and registration checks then race between nodes by at most one
//! bundle or space per node, which is fine for a bound.

mod memory;
mod sqlite;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use duet_model::DeviceId;
use duet_sync::proto::relay::{SignedAccess, SpaceTag};

pub use memory::MemoryRelayStore;
pub use sqlite::SqliteRelayStore;
pub(crate) use sqlite::private_dir;

/// Where a request came from, as the relay's per-address limits count it:
/// an IPv4 address, or the /64 prefix of an IPv6 one (a single host is
/// commonly given a whole /64, so counting its addresses one by one would
/// count nothing). 16 bytes: IPv4 as an IPv4-mapped IPv6 address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(pub [u8; 16]);

impl Source {
    /// The source `ip` counts as.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(v4.to_ipv6_mapped().octets()),
                None => {
                    let mut b = v6.octets();
                    b[8..].fill(0);
                    Source(b)
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => write!(f, "{v4}"),
            None => write!(f, "{v6}/64"),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({self})")
    }
}

/// Who registered a space: the device that set its first access list, and
/// where that device connected from. Kept with the space, so that the
/// relay's per-device and per-address limits hold across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registrant {
    /// The registering device.
    pub device: DeviceId,
    /// Its network source.
    pub source: Source,
}

/// How many spaces a [`Registrant`]'s device and source have registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registered {
    /// Spaces registered by the device.
    pub by_device: u64,
    /// Spaces registered from the source, by any device.
    pub from_source: u64,
}

/// Bundles handed out by [`RelayStore::fetch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// `(seq, bundle)` in ascending order.
    pub items: Vec<(u64, Vec<u8>)>,
    /// More matching bundles follow the last one.
    pub more: bool,
}

/// Why the relay's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder could not be made or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("the relay's database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was made by a newer relay.
    #[error(
        "the relay's database {path} was made by a newer duet (schema {found}; this one reads up to {supported}): upgrade duet"
    )]
    Newer {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build reads.
        supported: i64,
    },
    /// A stored record does not decode.
    #[error("the relay's store holds a damaged record: {0}")]
    Damaged(String),
    /// The operation needs a space that has no access list.
    #[error("the space is not registered on the relay")]
    UnknownSpace,
    /// A number does not fit the store's integers.
    #[error("a number is too large for the relay's store")]
    Overflow,
}

/// The relay's storage. Every method is about one space, except the
/// periodic [`expire`](RelayStore::expire) over all of them.
///
/// A space exists once it has an access list; its sequence numbers start at 1,
/// grow by one per bundle and are never reused, even after bundles are
/// deleted (a device remembers the last one it fetched).
pub trait RelayStore: Send {
    /// The space's access list, if the space is known.
    fn access(&mut self, space: &SpaceTag) -> Result<Option<SignedAccess>, StoreError>;

    /// Stores `access` as its space's list if the current list's serial is
    /// `replaces` (`None`: the space has no list yet). Returns whether it was
    /// stored: a compare-and-swap, so that concurrent writers cannot both win.
    /// A new space is recorded as registered `by` (kept for good; a
    /// replaced list keeps its space's registrant). The caller has checked
    /// the signature and the rules.
    fn set_access(
        &mut self,
        access: &SignedAccess,
        replaces: Option<u64>,
        by: &Registrant,
    ) -> Result<bool, StoreError>;

    /// How many spaces `by`'s device and `by`'s source registered.
    fn registered(&mut self, by: &Registrant) -> Result<Registered, StoreError>;

    /// Bytes the relay keeps over all spaces: bundles and access lists
    /// ([`SignedAccess::to_bytes`]).
    fn total_usage(&mut self) -> Result<u64, StoreError>;

    /// Keeps `bundle`, posted by `poster` at `now_ms`, under the space's next
    /// sequence number, which it returns. [`StoreError::UnknownSpace`] if the
    /// space has no access list.
    fn append(
        &mut self,
        space: &SpaceTag,
        poster: &DeviceId,
        bundle: &[u8],
        now_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Bundles with seq > `after` not posted by `not_from`, in order: as many
    /// as fit `max_bytes` and [`MAX_FETCH_ITEMS`](duet_sync::proto::relay::MAX_FETCH_ITEMS),
    /// and always the first one even if it alone is larger.
    fn fetch(
        &mut self,
        space: &SpaceTag,
        after: u64,
        not_from: &DeviceId,
        max_bytes: usize,
    ) -> Result<Fetched, StoreError>;

    /// Records that `device` holds every bundle of the space up to `upto`
    /// (clamped to the last sequence number given out; never lowered).
    fn ack(&mut self, space: &SpaceTag, device: &DeviceId, upto: u64) -> Result<(), StoreError>;

    /// Bytes of bundles the space keeps.
    fn usage(&mut self, space: &SpaceTag) -> Result<u64, StoreError>;

    /// Deletes the bundles of `space` (or of every space) that are delivered
    /// or too old, and returns how many:
    /// - delivered: every device of the space's access list other than the
    ///   bundle's poster acknowledged it (a list with no other device
    ///   delivers nothing: the bundle waits for a device to be added);
    /// - too old: posted at least `retention_ms` before `now_ms`.
    fn expire(
        &mut self,
        space: Option<&SpaceTag>,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<usize, StoreError>;
}

/// For each poster, the highest seq of theirs that every other listed device
/// acknowledged: what [`RelayStore::expire`] may delete as delivered.
/// `acked(d)` is a device's acknowledgement (0 if none).
pub(crate) fn delivered_upto(
    listed: &[DeviceId],
    poster: &DeviceId,
    acked: impl Fn(&DeviceId) -> u64,
) -> Option<u64> {
    listed.iter().filter(|d| *d != poster).map(acked).min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The same contract, run against both stores.

    use super::*;
    use duet_model::DeviceSecret;

    fn secret(n: u8) -> DeviceSecret {
        DeviceSecret::from_bytes(&[n; 32])
    }

    fn dev(n: u8) -> DeviceId {
        secret(n).device_id()
    }

    const SPACE: SpaceTag = SpaceTag([5; 16]);

    fn by(n: u8, ip: [u8; 4]) -> Registrant {
        Registrant {
            device: dev(n),
            source: Source::of(IpAddr::from(ip)),
        }
    }

    fn list_of(space: SpaceTag, serial: u64, devices: &[u8]) -> SignedAccess {
        SignedAccess::sign(
            &secret(devices[0]),
            space,
            serial,
            devices.iter().map(|d| dev(*d)),
        )
        .unwrap()
    }

    fn size(a: &SignedAccess) -> u64 {
        a.to_bytes().unwrap().len() as u64
    }

    fn list(serial: u64, devices: &[u8]) -> SignedAccess {
        SignedAccess::sign(
            &secret(devices[0]),
            SPACE,
            serial,
            devices.iter().map(|d| dev(*d)),
        )
        .unwrap()
    }

    fn contract(s: &mut dyn RelayStore) {
        let me = by(1, [10, 0, 0, 1]);
        assert_eq!(s.total_usage().unwrap(), 0);
        assert_eq!(s.registered(&me).unwrap(), Registered::default());
        assert_eq!(s.access(&SPACE).unwrap(), None);
        assert!(matches!(
            s.append(&SPACE, &dev(1), b"x", 0),
            Err(StoreError::UnknownSpace)
        ));
        // Compare-and-swap on the serial.
        assert!(!s.set_access(&list(1, &[1, 2]), Some(0), &me).unwrap());
        assert!(s.set_access(&list(1, &[1, 2]), None, &me).unwrap());
        assert!(!s.set_access(&list(2, &[1, 2]), None, &me).unwrap());
        // A replacement keeps the space's registrant.
        assert!(
            s.set_access(&list(2, &[1, 2, 3]), Some(1), &by(2, [10, 0, 0, 2]))
                .unwrap()
        );
        assert_eq!(s.access(&SPACE).unwrap(), Some(list(2, &[1, 2, 3])));
        let lists = size(&list(2, &[1, 2, 3]));
        assert_eq!(s.total_usage().unwrap(), lists);

        // Registrations are counted by device and by source.
        let other = SpaceTag([6; 16]);
        assert!(
            s.set_access(&list_of(other, 1, &[2]), None, &by(2, [10, 0, 0, 1]))
                .unwrap()
        );
        let lists = lists + size(&list_of(other, 1, &[2]));
        assert_eq!(
            s.registered(&me).unwrap(),
            Registered {
                by_device: 1,
                from_source: 2
            }
        );
        assert_eq!(
            s.registered(&by(2, [10, 0, 0, 2])).unwrap(),
            Registered {
                by_device: 1,
                from_source: 0
            }
        );

        // Sequence numbers grow from 1.
        assert_eq!(s.append(&SPACE, &dev(1), b"one", 10).unwrap(), 1);
        assert_eq!(s.append(&SPACE, &dev(2), b"two", 20).unwrap(), 2);
        assert_eq!(s.append(&SPACE, &dev(1), &[7; 100], 30).unwrap(), 3);
        assert_eq!(s.usage(&SPACE).unwrap(), 106);
        assert_eq!(s.total_usage().unwrap(), lists + 106);

        // Fetch skips the asker's own bundles and respects the byte budget,
        // but always hands out the first.
        let f = s.fetch(&SPACE, 0, &dev(2), 1000).unwrap();
        assert_eq!(f.items, vec![(1, b"one".to_vec()), (3, vec![7; 100])]);
        assert!(!f.more);
        let f = s.fetch(&SPACE, 0, &dev(2), 1).unwrap();
        assert_eq!(f.items, vec![(1, b"one".to_vec())]);
        assert!(f.more);
        let f = s.fetch(&SPACE, 1, &dev(3), 1).unwrap();
        assert_eq!(f.items, vec![(2, b"two".to_vec())]);
        assert!(f.more);
        assert_eq!(s.fetch(&SPACE, 3, &dev(3), 1000).unwrap(), Fetched::default());

        // Delivered: device 2 and 3 acknowledged bundle 1 (by device 1).
        s.ack(&SPACE, &dev(2), 1).unwrap();
        assert_eq!(
            s.expire(Some(&SPACE), 40, u64::MAX).unwrap(),
            0,
            "device 3 has not acked"
        );
        s.ack(&SPACE, &dev(3), 99).unwrap(); // clamped to 3
        assert_eq!(s.expire(None, 40, u64::MAX).unwrap(), 1);
        assert_eq!(s.fetch(&SPACE, 0, &dev(3), 1000).unwrap().items[0].0, 2);
        // Device 3's ack of 99 was clamped to 3: bundle 4 is not delivered to it.
        assert_eq!(s.append(&SPACE, &dev(1), b"four", 50).unwrap(), 4);
        s.ack(&SPACE, &dev(2), 4).unwrap();
        // Acks never go down.
        s.ack(&SPACE, &dev(2), 0).unwrap();
        // Bundle 2 (by device 2) needs devices 1 and 3; bundle 3 needs 2 and 3.
        assert_eq!(
            s.expire(None, 60, u64::MAX).unwrap(),
            1,
            "bundle 3: 2 and 3 acked it"
        );
        let left: Vec<u64> = s
            .fetch(&SPACE, 0, &dev(3), 1000)
            .unwrap()
            .items
            .iter()
            .map(|i| i.0)
            .collect();
        assert_eq!(left, vec![2, 4]);
        // Retention: bundle 2 was posted at 20.
        assert_eq!(s.expire(None, 1020, 1000).unwrap(), 1);
        assert_eq!(s.usage(&SPACE).unwrap(), 4);
        // Numbers are never reused once bundles are gone.
        assert_eq!(s.expire(None, 10_000, 1000).unwrap(), 1);
        assert_eq!(s.usage(&SPACE).unwrap(), 0);
        assert_eq!(s.total_usage().unwrap(), lists, "deleted bundles are uncounted");
        assert_eq!(s.append(&SPACE, &dev(1), b"five", 10_000).unwrap(), 5);

        // A list naming only the poster delivers nothing.
        assert!(s.set_access(&list(3, &[1]), Some(2), &me).unwrap());
        assert_eq!(s.expire(None, 10_001, 1000).unwrap(), 0);
        assert_eq!(s.usage(&SPACE).unwrap(), 4);
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&mut MemoryRelayStore::default());
    }

    #[test]
    fn sqlite_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&mut SqliteRelayStore::open(&dir.path().join("relay")).unwrap());
    }

    #[test]
    fn sqlite_store_keeps_everything_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay");
        {
            let mut s = SqliteRelayStore::open(&path).unwrap();
            s.set_access(&list(1, &[1, 2]), None, &by(1, [10, 0, 0, 1]))
                .unwrap();
            s.append(&SPACE, &dev(1), b"kept", 5).unwrap();
            s.ack(&SPACE, &dev(2), 0).unwrap();
        }
        let mut s = SqliteRelayStore::open(&path).unwrap();
        assert_eq!(s.access(&SPACE).unwrap(), Some(list(1, &[1, 2])));
        assert_eq!(
            s.registered(&by(1, [10, 0, 0, 1])).unwrap(),
            Registered {
                by_device: 1,
                from_source: 1
            }
        );
        assert_eq!(s.total_usage().unwrap(), size(&list(1, &[1, 2])) + 4);
        assert_eq!(
            s.fetch(&SPACE, 0, &dev(2), 100).unwrap().items,
            vec![(1, b"kept".to_vec())]
        );
        assert_eq!(s.append(&SPACE, &dev(1), b"next", 6).unwrap(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o700);
            assert_eq!(mode(&path.join(sqlite::DB_FILE)), 0o600);
        }
    }

    #[test]
    fn sqlite_store_migrates_a_version_1_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay");
        private_dir(&path).unwrap();
        {
            let conn = rusqlite::Connection::open(path.join(sqlite::DB_FILE)).unwrap();
            conn.execute_batch(sqlite::SCHEMA_V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO spaces (tag, access, last_seq) VALUES (?1, ?2, 1)",
                rusqlite::params![&SPACE.0[..], list(1, &[1, 2]).to_bytes().unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO bundles (space, seq, poster, posted_ms, size, bytes) VALUES (?1, 1, ?2, 0, 3, x'010203')",
                rusqlite::params![&SPACE.0[..], &dev(1).as_bytes()[..]],
            )
            .unwrap();
        }
        let mut s = SqliteRelayStore::open(&path).unwrap();
        assert_eq!(s.total_usage().unwrap(), size(&list(1, &[1, 2])) + 3);
        assert_eq!(
            s.registered(&by(1, [10, 0, 0, 1])).unwrap(),
            Registered::default(),
            "an old space counts for no one"
        );
        assert_eq!(s.append(&SPACE, &dev(1), b"next", 6).unwrap(), 2);
        assert_eq!(s.total_usage().unwrap(), size(&list(1, &[1, 2])) + 7);
    }

    #[test]
    fn sources_count_ipv4_hosts_and_ipv6_prefixes() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(v4), Source::of(mapped));
        assert_ne!(Source::of(v4), Source::of("192.0.2.8".parse().unwrap()));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b), "one /64");
        assert_ne!(Source::of(a), Source::of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(Source::of(v4).to_string(), "192.0.2.7");
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn sqlite_store_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay");
        drop(SqliteRelayStore::open(&path).unwrap());
        let conn = rusqlite::Connection::open(path.join(sqlite::DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            SqliteRelayStore::open(&path),
            Err(StoreError::Newer { found: 99, .. })
        ));
    }
}

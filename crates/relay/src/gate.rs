//! The relay's door, without sockets or a clock: how many connections one
//! address (a [`Source`]: an IPv4 host or an IPv6 /64) may hold at once, and
//! how fast it may open new ones. The server asks before each handshake, so
//! fresh device keys (free to make) from one address can neither take every
//! connection slot nor keep the relay busy with handshakes.
//!
//! The rate is a token bucket per address: [`GateLimits::handshake_burst`]
//! handshakes at once, refilled at [`GateLimits::handshakes_per_minute`].

use std::collections::HashMap;

use crate::store::Source;

/// The default connections one address may hold at once.
pub const DEFAULT_CONNECTIONS_PER_ADDRESS: usize = 32;
/// The default handshakes one address may start at once.
pub const DEFAULT_HANDSHAKE_BURST: u32 = 20;
/// The default rate at which an address earns handshakes back: 2 a second.
pub const DEFAULT_HANDSHAKES_PER_MINUTE: u32 = 120;

/// One handshake, in bucket units: a bucket earns `handshakes_per_minute`
/// units a millisecond, so that the arithmetic stays in integers.
const UNIT: u64 = 60_000;

/// Addresses remembered before forgetting the idle ones is worth a pass.
const PRUNE_FLOOR: usize = 1024;

/// The door's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Connections one address may hold at once.
    pub connections_per_address: usize,
    /// Handshakes one address may start at once (the bucket's size).
    pub handshake_burst: u32,
    /// Handshakes an address earns back a minute.
    pub handshakes_per_minute: u32,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits {
            connections_per_address: DEFAULT_CONNECTIONS_PER_ADDRESS,
            handshake_burst: DEFAULT_HANDSHAKE_BURST,
            handshakes_per_minute: DEFAULT_HANDSHAKES_PER_MINUTE,
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address holds its share of connections.
    #[error("too many connections from this address")]
    TooMany,
    /// The address started handshakes faster than its rate.
    #[error("handshakes from this address come too often")]
    TooOften,
}

/// One address's share.
#[derive(Debug)]
struct Door {
    /// Bucket units left, at `at_ms`.
    units: u64,
    at_ms: u64,
    /// Connections open.
    open: usize,
}

/// The door: per-address connection counts and handshake buckets.
#[derive(Debug)]
pub struct Gate {
    limits: GateLimits,
    doors: HashMap<Source, Door>,
    prune_at: usize,
}

impl Gate {
    /// A door with `limits`, with every address's bucket full.
    pub fn new(limits: GateLimits) -> Gate {
        Gate {
            limits,
            doors: HashMap::new(),
            prune_at: PRUNE_FLOOR,
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limits.handshake_burst).saturating_mul(UNIT)
    }

    /// The bucket of `door` at `now_ms`.
    fn refilled(&self, door: &Door, now_ms: u64) -> u64 {
        refill(door, now_ms, self.limits.handshakes_per_minute, self.capacity())
    }

    /// Counts a handshake from `source` at `now_ms` (milliseconds on any
    /// clock that does not go back), or refuses it. A connection let in must
    /// be [`Gate::close`]d when it ends.
    pub fn open(&mut self, source: Source, now_ms: u64) -> Result<(), Refusal> {
        if self.doors.len() >= self.prune_at {
            self.prune(now_ms);
        }
        let (full, rate) = (self.capacity(), self.limits.handshakes_per_minute);
        let door = self.doors.entry(source).or_insert(Door {
            units: full,
            at_ms: now_ms,
            open: 0,
        });
        if door.open >= self.limits.connections_per_address {
            return Err(Refusal::TooMany);
        }
        let units = refill(door, now_ms, rate, full);
        door.at_ms = door.at_ms.max(now_ms);
        door.units = units;
        if units < UNIT {
            return Err(Refusal::TooOften);
        }
        door.units = units - UNIT;
        door.open += 1;
        Ok(())
    }

    /// Counts the end of a connection from `source` that [`Gate::open`] let in.
    pub fn close(&mut self, source: Source) {
        if let Some(door) = self.doors.get_mut(&source) {
            door.open = door.open.saturating_sub(1);
        }
    }

    /// Connections `source` holds.
    pub fn open_from(&self, source: Source) -> usize {
        self.doors.get(&source).map_or(0, |d| d.open)
    }

    /// Addresses the door remembers (for tests and logs).
    pub fn remembered(&self) -> usize {
        self.doors.len()
    }

    /// Forgets the addresses with no connection and a full bucket: they are
    /// as if never seen. Runs when the map has doubled since the last pass,
    /// so its cost is spread over the handshakes that grew it.
    fn prune(&mut self, now_ms: u64) {
        let full = self.capacity();
        let doors = std::mem::take(&mut self.doors);
        self.doors = doors
            .into_iter()
            .filter(|(_, d)| d.open > 0 || self.refilled(d, now_ms) < full)
            .collect();
        self.prune_at = (self.doors.len() * 2).max(PRUNE_FLOOR);
    }
}

/// `door`'s bucket at `now_ms`, earning `rate` units a millisecond up to `full`.
fn refill(door: &Door, now_ms: u64, rate: u32, full: u64) -> u64 {
    let earned = now_ms.saturating_sub(door.at_ms).saturating_mul(u64::from(rate));
    door.units.saturating_add(earned).min(full)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(last: u8) -> Source {
        Source::of([10, 0, 0, last].into())
    }

    fn gate(connections: usize, burst: u32, per_minute: u32) -> Gate {
        Gate::new(GateLimits {
            connections_per_address: connections,
            handshake_burst: burst,
            handshakes_per_minute: per_minute,
        })
    }

    #[test]
    fn a_burst_beyond_the_rate_is_refused_while_another_address_is_served() {
        let mut g = gate(100, 5, 60); // one a second back
        for _ in 0..5 {
            g.open(at(1), 0).unwrap();
            g.close(at(1));
        }
        assert_eq!(g.open(at(1), 0), Err(Refusal::TooOften));
        assert_eq!(g.open(at(1), 999), Err(Refusal::TooOften));
        assert_eq!(g.open(at(2), 999), Ok(()), "another address is served");
        // One second earns one handshake back.
        assert_eq!(g.open(at(1), 1000), Ok(()));
        assert_eq!(g.open(at(1), 1000), Err(Refusal::TooOften));
        // A long pause refills the bucket to its size, no more.
        for _ in 0..5 {
            g.open(at(1), 3_600_000).unwrap();
        }
        assert_eq!(g.open(at(1), 3_600_000), Err(Refusal::TooOften));
    }

    #[test]
    fn an_address_holds_at_most_its_share_of_connections() {
        let mut g = gate(3, 100, 0);
        for _ in 0..3 {
            g.open(at(1), 0).unwrap();
        }
        assert_eq!(g.open(at(1), 0), Err(Refusal::TooMany));
        assert_eq!(g.open_from(at(1)), 3);
        assert_eq!(g.open(at(2), 0), Ok(()));
        g.close(at(1));
        assert_eq!(g.open(at(1), 0), Ok(()), "a closed connection frees its slot");
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let mut g = gate(8, 2, 60);
        let many = |i: u16| Source::of([10, 1, (i >> 8) as u8, i as u8].into());
        for i in 0..(PRUNE_FLOOR as u16 - 1) {
            g.open(many(i), 0).unwrap();
            g.close(many(i));
        }
        let busy = at(1);
        g.open(busy, 0).unwrap();
        assert_eq!(g.remembered(), PRUNE_FLOOR);
        // Two seconds later every bucket is full again: the next pass
        // forgets all but the address with a connection.
        g.open(at(2), 2000).unwrap();
        assert_eq!(g.remembered(), 2);
        assert_eq!(g.open_from(busy), 1);
    }
}

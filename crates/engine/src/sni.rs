//! Showing this device's key only to the couple's devices.
//!
//! In TLS 1.3 a server sends its certificate (here: its device key) before the
//! client authenticates. A `serve` that showed it to every client would give
//! anyone who connects a stable identifier of the device, one that links the
//! mDNS names it announces day after day (see [`crate::discovery`]).
//!
//! So a member device dials with a TLS server name (SNI) that only holders of
//! a space key can compute: `<token>[.<token>...].duet.invalid`, one token per
//! space key, newest generation first, at most [`MAX_TOKENS`]. A token is
//! [`sni_token`]: 8 bytes of `HMAC-SHA256(space key, "duet/sni/v1:" ||
//! YYYY-MM-DD)` (UTC) in lowercase hex. The serve's [`MemberGate`] shows the
//! device key only if a token of the name is one it computes from the keys it
//! holds for yesterday, today or tomorrow (clocks disagree around midnight);
//! any other client's handshake ends at its ClientHello with `access_denied`,
//! having seen no key. Several tokens let a device that has not yet learned
//! the newest key (made when another device revoked one) still be let in.
//!
//! What it does not hide: a token travels in clear in the ClientHello, so
//! someone who watches a member dial can replay that name on the same day
//! (and the next, within the tolerance) and be shown the key of the devices
//! of that couple. Such an observer already sees the couple's addresses and
//! traffic. The token names the couple, not a device: a dialler given only an
//! address does not know which of the couple's devices answers there.

use std::sync::{Arc, PoisonError, RwLock};

use duet_sync::net::tls::{self, KeyGate};
use duet_sync::proto::keyring::Keyring;
use jiff::civil::Date;
use zeroize::Zeroizing;

use crate::discovery::{day_text, days_around, hex, hmac, today};
use crate::error::Result;
use crate::home::Home;

/// The suffix of the server name a member dials with (a name that is not in
/// the DNS, RFC 6761).
pub const SNI_SUFFIX: &str = ".duet.invalid";

/// The most tokens a server name carries (and a serve looks at).
pub const MAX_TOKENS: usize = 3;

/// How many bytes of the HMAC make a token (16 hex digits).
const TOKEN_BYTES: usize = 8;

/// The server-name token of `space_key` for `day`: lowercase hex of the first
/// 8 bytes of `HMAC-SHA256(space_key, "duet/sni/v1:" || "YYYY-MM-DD")`. Its
/// own label, so it is none of the names announced on the network.
pub fn sni_token(space_key: &[u8; 32], day: Date) -> String {
    let mac = hmac(space_key, &[b"duet/sni/v1:", day_text(day).as_bytes()]);
    hex(&mac[..TOKEN_BYTES])
}

/// The server name to dial the couple's devices with on `day`, from the keys
/// of `ring` (newest first); the fixed [`tls::SERVER_NAME`] without keys.
pub fn server_name(ring: &Keyring, day: Date) -> String {
    let mut keys: Vec<_> = ring.iter().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.generation()));
    let tokens: Vec<String> = keys
        .iter()
        .take(MAX_TOKENS)
        .map(|k| sni_token(k.secret(), day))
        .collect();
    if tokens.is_empty() {
        return tls::SERVER_NAME.to_string();
    }
    format!("{}{SNI_SUFFIX}", tokens.join("."))
}

/// A serve's [`KeyGate`]: opens for a server name holding a token of a space
/// key this device holds, for yesterday, today or tomorrow. Clones share the
/// keys, so the serve updates them as it learns new ones.
#[derive(Clone, Default)]
pub struct MemberGate {
    keys: Arc<RwLock<Zeroizing<Vec<[u8; 32]>>>>,
}

impl std::fmt::Debug for MemberGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("MemberGate").finish_non_exhaustive()
    }
}

impl MemberGate {
    /// A gate for the keys of `ring`.
    pub fn new(ring: &Keyring) -> MemberGate {
        let gate = MemberGate::default();
        gate.replace(ring);
        gate
    }

    /// Opens for the keys of `ring` from now on.
    pub fn replace(&self, ring: &Keyring) {
        let keys = Zeroizing::new(ring.iter().map(|k| *k.secret()).collect());
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// Whether the gate opens for `server_name` on `today`.
    pub fn opens_on(&self, server_name: Option<&str>, today: Date) -> bool {
        let Some(tokens) = server_name.and_then(|n| n.strip_suffix(SNI_SUFFIX)) else {
            return false;
        };
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let days = days_around(today);
        tokens.split('.').take(MAX_TOKENS).any(|token| {
            keys.iter()
                .any(|key| days.iter().any(|day| sni_token(key, *day) == token))
        })
    }
}

impl KeyGate for MemberGate {
    fn opens_for(&self, server_name: Option<&str>) -> bool {
        self.opens_on(server_name, today())
    }
}

impl Home {
    /// The TLS server name to dial the couple's devices with today (see the
    /// module doc): a serve shows its device key only to a client that sends
    /// it.
    pub fn sync_server_name(&mut self) -> Result<String> {
        Ok(server_name(&self.keyring()?, today()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_sync::proto::keyring::SpaceKey;

    fn day(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn ring(keys: &[(u32, u8)]) -> Keyring {
        let mut ring = Keyring::default();
        for (generation, byte) in keys {
            ring.insert(SpaceKey::from_secret(*generation, [*byte; 32]));
        }
        ring
    }

    #[test]
    fn the_token_is_the_documented_hmac_and_differs_from_the_mdns_names() {
        use hmac::{Hmac, Mac};
        let key = [7u8; 32];
        let d = day("2026-12-02");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"duet/sni/v1:2026-12-02");
        let want = hex(&mac.finalize().into_bytes()[..8]);
        assert_eq!(sni_token(&key, d), want);
        assert_eq!(want.len(), 16);
        assert!(!crate::discovery::service_tag(&key, d).starts_with(&want));
        assert_ne!(sni_token(&key, d), sni_token(&key, day("2026-12-03")));
    }

    #[test]
    fn the_name_carries_the_newest_keys_first_and_the_gate_opens_for_any_of_them() {
        let d = day("2026-12-02");
        assert_eq!(server_name(&Keyring::default(), d), tls::SERVER_NAME);
        let four = ring(&[(1, 1), (2, 2), (3, 3), (4, 4)]);
        let name = server_name(&four, d);
        let want = format!(
            "{}.{}.{}{SNI_SUFFIX}",
            sni_token(&[4; 32], d),
            sni_token(&[3; 32], d),
            sni_token(&[2; 32], d)
        );
        assert_eq!(name, want);
        // A serve that has not learned keys 3 and 4 yet still opens.
        let behind = MemberGate::new(&ring(&[(1, 1), (2, 2)]));
        assert!(behind.opens_on(Some(&name), d));
        // Clocks a day apart agree; two days do not.
        assert!(behind.opens_on(Some(&name), day("2026-12-03")));
        assert!(behind.opens_on(Some(&name), day("2026-12-01")));
        assert!(!behind.opens_on(Some(&name), day("2026-12-04")));
        // A serve holding none of them (another couple) does not.
        let other = MemberGate::new(&ring(&[(1, 9)]));
        assert!(!other.opens_on(Some(&name), d));
        other.replace(&ring(&[(1, 9), (2, 2)]));
        assert!(other.opens_on(Some(&name), d));
    }

    #[test]
    fn the_gate_stays_closed_to_names_that_are_not_a_members() {
        let keys = ring(&[(1, 1)]);
        let d = day("2026-12-02");
        let gate = MemberGate::new(&keys);
        let token = sni_token(&[1; 32], d);
        assert!(gate.opens_on(Some(&format!("{token}{SNI_SUFFIX}")), d));
        for name in [
            None,
            Some(tls::SERVER_NAME.to_string()),
            Some(token.clone()),
            Some(format!("{token}.duet.invalid.example")),
            Some(format!("a.b.c.{token}{SNI_SUFFIX}")),
            Some(format!("{}{SNI_SUFFIX}", sni_token(&[2; 32], d))),
            Some(SNI_SUFFIX.to_string()),
        ] {
            assert!(!gate.opens_on(name.as_deref(), d), "{name:?}");
        }
        assert!(!format!("{:?}", gate).contains("01"), "no key in Debug");
    }
}

//! Words people read and type: the [`PairingCode`] and the verification phrase
//! (re-exported by [`pairing`](super::pairing)). Both use the BIP-39 English list
//! (2,048 words, 11 bits each): common, short words that differ in their first
//! four letters, so a unique prefix is enough.

use std::fmt;
use std::str::FromStr;

use bip39::Language;
use thiserror::Error;

const CODE_NUMBERS: u16 = 1024;

/// Why text is not a pairing code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodeError {
    /// Not a number and two words.
    #[error("a pairing code is a number and two words, like 7-guitar-orbit")]
    Shape,
    /// The number part is not 1 to 1024.
    #[error("{0:?} is not a pairing code number (1 to 1024)")]
    Number(String),
    /// A word not in the list.
    #[error("{0:?} is not a pairing code word: check its spelling")]
    Word(String),
}

/// A one-time pairing code: a number from 1 to 1024 and two words of the BIP-39
/// English list, like `7-guitar-orbit`: 32 bits. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode {
    number: u16,
    words: [u16; 2],
}

impl PairingCode {
    /// Bits of entropy in a code.
    pub const ENTROPY_BITS: u32 = 32;

    /// Makes a code from 4 fresh random bytes (the caller's OS random source).
    pub fn from_random(bytes: [u8; 4]) -> PairingCode {
        let x = u32::from_be_bytes(bytes);
        PairingCode {
            number: (x >> 22) as u16 + 1,
            words: [((x >> 11) & 0x7ff) as u16, (x & 0x7ff) as u16],
        }
    }
}

impl fmt::Display for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = self.words;
        write!(f, "{}-{}-{}", self.number, word(a), word(b))
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingCode(redacted)")
    }
}

impl FromStr for PairingCode {
    type Err = CodeError;

    /// Parses leniently: any case, hyphens or spaces between parts, extra
    /// separators, and a word's unique prefix of four letters or more.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 200 {
            return Err(CodeError::Shape);
        }
        let lower = s.to_lowercase();
        let parts: Vec<&str> = lower
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        let [number, a, b] = parts.as_slice() else {
            return Err(CodeError::Shape);
        };
        let number = Some(number)
            .filter(|n| n.len() <= 4 && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse::<u16>().ok())
            .filter(|n| (1..=CODE_NUMBERS).contains(n))
            .ok_or_else(|| CodeError::Number(number.to_string()))?;
        let find = |w: &str| index(w).ok_or_else(|| CodeError::Word(w.to_string()));
        Ok(PairingCode {
            number,
            words: [find(a)?, find(b)?],
        })
    }
}

/// The word at `index` (only its low 11 bits count).
pub(crate) fn word(index: u16) -> &'static str {
    Language::English.word_list()[usize::from(index & 0x7ff)]
}

/// A lowercase word's index, from the whole word or from a prefix of at least
/// four letters that only one word has.
pub(crate) fn index(token: &str) -> Option<u16> {
    let english = Language::English;
    english.find_word(token).or_else(|| {
        let mut matches = english.words_by_prefix_iter(token);
        match (token.len() >= 4, matches.next(), matches.next()) {
            (true, Some(only), None) => english.find_word(only),
            _ => None,
        }
    })
}

/// Four words from 44 of `bytes`' bits, space-separated.
pub(crate) fn phrase(bytes: &[u8; 32]) -> String {
    let x = u64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    let words: Vec<&str> = (0..4).map(|i| word((x >> (53 - 11 * i)) as u16)).collect();
    words.join(" ")
}

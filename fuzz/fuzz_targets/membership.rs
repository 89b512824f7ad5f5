#![no_main]
//! See `duet_fuzz::membership`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::membership, data));

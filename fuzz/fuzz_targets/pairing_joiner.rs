#![no_main]
//! See `duet_fuzz::pairing_joiner`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::pairing_joiner, data));

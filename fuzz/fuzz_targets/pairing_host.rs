#![no_main]
//! See `duet_fuzz::pairing_host`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::pairing_host, data));

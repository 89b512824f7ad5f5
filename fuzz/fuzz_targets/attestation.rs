#![no_main]
//! See `duet_fuzz::attestation`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::attestation, data));

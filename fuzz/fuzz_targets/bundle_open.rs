#![no_main]
//! See `duet_fuzz::bundle_open`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::bundle_open, data));

#![no_main]
//! See `duet_fuzz::store_open`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::store_open, data));

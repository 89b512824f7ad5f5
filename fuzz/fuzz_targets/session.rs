#![no_main]
//! See `duet_fuzz::session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::session, data));

#![no_main]
//! See `duet_fuzz::parse_chunks`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::parse_chunks, data));

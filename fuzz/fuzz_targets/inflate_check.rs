#![no_main]
//! See `duet_fuzz::inflate_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::inflate_check, data));

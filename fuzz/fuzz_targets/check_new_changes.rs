#![no_main]
//! See `duet_fuzz::check_new_changes`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::check_new_changes, data));

#![no_main]
//! See `duet_fuzz::wire_message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::wire_message, data));

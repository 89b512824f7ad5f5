#![no_main]
//! See `duet_fuzz::relay_wire`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::relay_wire, data));

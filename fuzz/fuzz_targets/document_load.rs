#![no_main]
//! See `duet_fuzz::document_load`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::document_load, data));

#![no_main]
//! See `duet_fuzz::document_ops`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::document_ops, data));

#![no_main]
//! See `duet_fuzz::frame_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| duet_fuzz::fuzz(duet_fuzz::frame_decoder, data));

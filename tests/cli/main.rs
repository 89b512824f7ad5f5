//! Black-box tests: run the real `duet` binary against temporary homes.
//!
//! Every test gets its own home in a temporary folder (see [`util::TestHome`]);
//! nothing reads or writes the user's real data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agreements;
mod bundle;
mod checkins;
mod concurrency;
mod crash;
mod discovery;
mod errors;
mod export;
mod full_disk;
mod init;
mod issues;
mod log;
mod pairing;
mod private;
mod relay;
mod serve;
mod steps;
mod sync;
mod util;

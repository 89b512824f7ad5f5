#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A short run of the load example (`examples/load.rs`): two paired homes,
//! each making 50 edits a second for 10 seconds with live sync over loopback
//! QUIC. No edit fails or is lost, the homes converge soon after the last
//! edit, and memory stays bounded. The full two-minute run is
//! `cargo run --release -p duet --example load`.

#[path = "../../../examples/load.rs"]
#[allow(dead_code)] // its `main` and a few fields are for the example only
mod load;

use std::time::Duration;

/// The peak RSS a 10-second run may reach: the process holds two homes of
/// about a thousand changes each, two QUIC endpoints and the test harness.
const PEAK_LIMIT: u64 = 512 * 1024 * 1024;

/// RSS growth a thousand edits may cost (start of editing to convergence).
/// The documents themselves grow, so it is not zero.
const GROWTH_LIMIT_PER_1000: f64 = 64.0 * 1024.0 * 1024.0;

#[test]
fn two_devices_at_fifty_edits_a_second_lose_nothing_and_converge() {
    let config = load::Config {
        seconds: 10.0,
        rate: 50,
        converge_timeout: Duration::from_secs(30),
        shared_percent: 40,
        progress: false,
    };
    let s = load::run(&config).unwrap();
    eprint!("{s}");
    assert_eq!(s.failed, 0, "edits failed: {:?}", s.failures);
    assert_eq!(s.total(), 1000, "every scheduled edit was made");
    assert_eq!(s.lost, 0, "edits were lost: {:?}", s.lost_examples);
    let after = s.converged_after.expect("the homes did not converge within 30 s");
    assert!(
        s.same_record,
        "the homes hold the same heads but show different records"
    );
    assert!(
        after < Duration::from_secs(15),
        "convergence took {after:?} after the last edit"
    );
    // Every edit was seen arriving on the other side while the run watched.
    assert_eq!(s.unmeasured, 0, "edits never seen arriving");
    assert!(
        s.latencies.len() >= s.total() * 9 / 10,
        "only {} of {} edits were seen arriving",
        s.latencies.len(),
        s.total()
    );
    assert!(s.rss_start > 0, "no memory figures (is /proc mounted?)");
    assert!(s.samples.len() >= 8, "only {} memory samples", s.samples.len());
    assert!(
        s.rss_peak < PEAK_LIMIT && s.hwm < PEAK_LIMIT,
        "peak RSS {} / VmHWM {} bytes",
        s.rss_peak,
        s.hwm
    );
    assert!(
        s.growth_per_1000() < GROWTH_LIMIT_PER_1000,
        "RSS grew {} bytes per 1000 edits",
        s.growth_per_1000()
    );
}

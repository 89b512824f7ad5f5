//! `duet serve`: live push between two running servers, and stopping cleanly.

use std::time::{Duration, Instant};

use crate::util::{SETTLE, TestHome, couple, serve, str_of};

/// Polls `h`'s issue list every 50 ms until an issue titled `title` shows up;
/// returns how long that took after `since`, or `None` after `limit`.
fn wait_for_issue(h: &TestHome, title: &str, since: Instant, limit: Duration) -> Option<Duration> {
    loop {
        if h.issues().iter().any(|i| i["title"] == title) {
            return Some(since.elapsed());
        }
        if since.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long after `serve` starts its edit watcher takes its first look (the
/// `poll` of `duet serve`, 100 ms), with a margin.
const FIRST_POLL: Duration = Duration::from_millis(300);

#[test]
fn live_push_between_two_servers() {
    let (alex, blair) = couple(|_| {});
    let a = serve(&alex, &[]);
    let b = serve(&blair, &["--peer", &a.addr]);
    let limit = Duration::from_secs(10);
    // An edit made before the servers' edit watchers first look may never be
    // pushed (see `an_edit_in_the_first_poll_interval_is_pushed_too`): start
    // after that.
    std::thread::sleep(FIRST_POLL);

    // The first edit arrives once Blair's server has dialled Alex's.
    alex.ok(&["issue", "add", "Warm-up"]);
    wait_for_issue(&blair, "Warm-up", Instant::now(), limit).unwrap_or_else(|| {
        panic!(
            "the servers did not connect within {limit:?}\nAlex's serve:\n{}\nBlair's serve:\n{}",
            a.proc.stderr(),
            b.proc.stderr(),
        )
    });

    // Each edit is its own process on Alex's home; Blair's home sees it
    // without anyone running `sync`.
    let mut latencies = Vec::new();
    for n in 0..10 {
        let title = format!("Live {n}");
        alex.ok(&["issue", "add", &title]);
        let start = Instant::now();
        let took = wait_for_issue(&blair, &title, start, limit).unwrap_or_else(|| {
            panic!(
                "`{title}` did not reach Blair within {limit:?}\nAlex's serve:\n{}\nBlair's serve:\n{}",
                a.proc.stderr(),
                b.proc.stderr(),
            )
        });
        latencies.push(took);
    }
    // And the other way, over the same connection.
    blair.ok(&["issue", "add", "Back to Alex"]);
    let back = wait_for_issue(&alex, "Back to Alex", Instant::now(), limit)
        .unwrap_or_else(|| panic!("Blair's edit did not reach Alex within {limit:?}"));

    let mut sorted = latencies.clone();
    sorted.sort();
    eprintln!(
        "live push latency over {} edits: p50 {:?}, min {:?}, max {:?} (all: {:?}); back {back:?}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        latencies
    );

    // Both stop cleanly with a live session open.
    for s in [a, b] {
        s.stop("TERM").success();
    }
}

#[test]
fn an_edit_in_the_first_poll_interval_is_pushed_too() {
    let (alex, blair) = couple(|_| {});
    let a = serve(&alex, &[]);
    let _b = serve(&blair, &["--peer", &a.addr]);
    let limit = Duration::from_secs(5);
    // Edits right after the servers connect, within the first poll interval
    // of Alex's server: each must still be pushed.
    for title in ["First", "Second"] {
        alex.ok(&["issue", "add", title]);
        assert!(
            wait_for_issue(&blair, title, Instant::now(), limit).is_some(),
            "`{title}`, made right after the servers started, was not pushed within {limit:?}"
        );
    }
}

#[test]
fn sigint_and_sigterm_stop_serve_cleanly() {
    let h = TestHome::named("Alex", "alex-laptop");
    for (signal, json) in [("INT", true), ("TERM", true), ("INT", false), ("TERM", false)] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        if json {
            args.push("--json");
        }
        let mut p = h.spawn(&args);
        let first = p.line();
        if json {
            let v: serde_json::Value = serde_json::from_str(&first).expect("JSON");
            assert!(str_of(&v, "listening").starts_with("127.0.0.1:"), "{first}");
        } else {
            assert!(first.starts_with("Serving at 127.0.0.1:"), "{first}");
        }
        std::thread::sleep(SETTLE);
        p.signal(signal);
        let run = p.finish();
        assert_eq!(run.status.code(), Some(0), "SIG{signal}: {run:?}");
        assert_eq!(run.stderr, "", "SIG{signal}");
        let last = run.stdout.lines().last().unwrap_or_default().to_string();
        if json {
            assert_eq!(last, r#"{"stopped":true}"#, "SIG{signal}");
        } else {
            assert_eq!(last, "Stopped.", "SIG{signal}");
        }
        assert_eq!(run.stdout.lines().count(), 2, "{:?}", run.stdout);
    }
    // The home is fine afterwards.
    h.ok(&["status"]);
}

#[test]
fn serve_stops_cleanly_on_a_signal_sent_as_soon_as_it_listens() {
    let h = TestHome::named("Alex", "alex-laptop");
    for n in 0..20 {
        let signal = if n % 2 == 0 { "TERM" } else { "INT" };
        let mut p = h.spawn(&["serve", "--listen", "127.0.0.1:0", "--json"]);
        p.line();
        p.signal(signal);
        let run = p.finish();
        assert_eq!(run.status.code(), Some(0), "SIG{signal}: {run:?}");
        assert_eq!(run.stdout.lines().last(), Some(r#"{"stopped":true}"#));
    }
}

//! A new device's pairing killed during its first sync, where the whole
//! history arrives as one document and is stored in one write.

use super::*;
use crate::util::{confirm, pair, pair_host_with};

/// Kills in `cargo test` (with `DUET_CRASH_ROUNDS=N`, N / 5 if more).
const CI_KILLS: usize = 4;

#[test]
fn a_pairing_killed_during_the_first_sync_keeps_all_or_nothing_and_the_next_attempt_completes() {
    let seed = seed();
    let kills = (rounds(CI_KILLS * 5) / 5).max(CI_KILLS);
    eprintln!("crash (first sync): seed {seed} (DUET_CRASH_SEED={seed} repeats it), {kills} kills");
    let mut rng = Rng(seed ^ 0x0f17_57c0);
    let alex = TestHome::named("Alex", "alex-laptop");
    // A history that takes a while to send.
    let history = write_history(&alex, &mut rng, "long story", 3, 400);
    let everything = (history.issues.len(), history.notes.len());

    // A pairing left alone, for how long one takes.
    let t0 = Instant::now();
    let first = TestHome::named("Blair", "blair-phone");
    pair(&alex, &first, &[]);
    let whole = t0.elapsed();
    assert_eq!(holds(&opens(&first, "unkilled"), &history), everything);

    let (mut nothing, mut taken, mut late) = (0, 0, 0);
    for n in 0..kills {
        let ctx = format!("seed {seed}, kill {n}");
        // A device with an entry of its own, to be carried into the space.
        let phone = TestHome::named("Blair", &format!("phone-{n}"));
        let own_id = phone.add_issue(&format!("my own {n}"));
        // Blair's seat has a device now: these pair as Alex's own.
        let (mut host, code, addr) = pair_host_with(&alex, &["--own-device"]);
        let wal = wal_state(&phone);
        let mut join = phone.spawn(&["pair", "join", &code, &addr, "--json"]);
        confirm(&mut host, &mut join).expect("the joiner shows a phrase");
        if rng.chance(0.5) {
            std::thread::sleep(rng.upto(whole));
        } else {
            // Aimed at the joiner's writes: from its first (the entries it
            // keeps aside), through the first sync, to the import.
            let t = Instant::now();
            while wal_state(&phone) == wal && t.elapsed() < whole * 4 {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(rng.upto(whole / 3));
        }
        join.signal("KILL");
        drop(join);
        drop(host);

        // The home opens, and holds the host's history whole or not at all.
        let ix = opens(&phone, &ctx);
        match holds(&ix, &history) {
            (0, 0) => nothing += 1,
            got if got == everything => taken += 1,
            got => panic!("{ctx}: the phone holds part of the history: {got:?} of {everything:?}"),
        }

        // The next attempt completes: everything, and its own entry once. A
        // kill after the pairing had finished its work (the entries carried
        // over) leaves a paired device, which refuses a second pairing: a
        // sync catches it up.
        let (mut host, code, addr) = pair_host_with(&alex, &["--own-device"]);
        let mut again = phone.spawn(&["pair", "join", &code, &addr, "--json"]);
        // A phone already paired refuses before it shows a phrase.
        confirm(&mut host, &mut again);
        let join_log = again.stderr_path();
        again.wait_timeout(Duration::from_secs(45));
        let again = again.finish();
        let host_log = host.stderr();
        drop(host);
        if !again.status.success() {
            let line = again.stderr.lines().last().unwrap_or_default().to_string();
            assert!(
                line.contains("already shares its space"),
                "{ctx}: {line}\n`pair host` said:\n{host_log}\n`pair join` said:\n{}",
                std::fs::read_to_string(join_log).unwrap_or_default()
            );
            late += 1;
            let server = serve(&alex, &[]);
            phone.json(&["sync", &server.addr]);
        }
        let ix = opens(&phone, &format!("{ctx}, paired again"));
        assert_eq!(holds(&ix, &history), everything, "{ctx}");
        let mine: Vec<&Value> = ix
            .list
            .iter()
            .filter(|i| i["title"] == format!("my own {n}"))
            .collect();
        assert_eq!(mine.len(), 1, "{ctx}: its own entry once: {:?}", ix.list);
        assert!(
            str_of(mine[0], "id").starts_with(&own_id[..6]),
            "{ctx}: the same entry"
        );
        let log = phone.json(&["log", "--all"]);
        assert_eq!(log.as_array().map(Vec::len), Some(ix.changes as usize), "{ctx}");
    }
    eprintln!(
        "crash (first sync): a pairing takes {whole:?}; killed with nothing taken {nothing}, \
         with all {taken} (of which {late} had finished pairing)"
    );
}

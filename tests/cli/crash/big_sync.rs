//! `serve` killed while a big divergent history is being synced.

use super::*;

/// The files of a home, to put it back as it was.
fn save(h: &TestHome) -> Vec<(PathBuf, Vec<u8>)> {
    h.files()
}

/// Puts back the files `saved` (no process may have the home open): every
/// file now in the folder goes first, so no newer -wal is replayed onto the
/// older database.
fn restore(h: &TestHome, saved: &[(PathBuf, Vec<u8>)]) {
    for (path, _) in h.files() {
        std::fs::remove_file(&path).expect("cannot remove a home file");
    }
    for (path, bytes) in saved {
        std::fs::write(path, bytes).expect("cannot restore a home file");
    }
}

/// The bodies of the big issues a home holds (`ix`) are whole.
#[track_caller]
fn bodies_whole(ix: &Index, all: &HashMap<String, String>, ctx: &str) {
    for i in &ix.list {
        let title = str_of(i, "title");
        let body = all
            .get(&title)
            .unwrap_or_else(|| panic!("{ctx}: an issue from nowhere: {title}"));
        assert!(
            i["body"] == body.as_str(),
            "{ctx}: issue `{title}` is there but its body is not whole ({} of {} bytes)",
            i["body"].as_str().map_or(0, str::len),
            body.len()
        );
    }
}

/// From this many kills on, some must have cut a sync mid-exchange.
const LONG_RUN_KILLS: usize = 20;

#[test]
fn killing_serve_during_a_big_divergent_sync_loses_nothing_and_the_next_sync_converges() {
    let started = Instant::now();
    let seed = seed();
    let kills = (rounds(CI_ROUNDS) / 10).max(CI_BIG_KILLS);
    eprintln!("crash (big sync): seed {seed} (DUET_CRASH_SEED={seed} repeats it), {kills} kills");
    let mut rng = Rng(seed ^ 0xb165_c0de);
    let (alex, blair) = couple(|_| {});
    let homes = [&alex, &blair];

    // Each writes a history of its own offline: a few long texts that
    // compress poorly, and many notes on them: more changes than one sync
    // message carries (64), so the sync takes several messages, each stored
    // in its own transaction.
    let (issues, notes) = (4, 300);
    let own: [History; 2] = [
        write_history(&alex, &mut rng, "big Alex", issues, notes),
        write_history(&blair, &mut rng, "big Blair", issues, notes),
    ];
    let all: HashMap<String, String> = own
        .iter()
        .flat_map(|o| &o.issues)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pristine = [save(&alex), save(&blair)];
    let before = [opens(&alex, "before").changes, opens(&blair, "before").changes];

    // How long a whole sync takes here, from starting `duet sync` to its exit.
    let server = serve(&alex, &[]);
    let t0 = Instant::now();
    let report = blair.json(&["sync", &server.addr]);
    let whole = t0.elapsed();
    drop(server);
    let full = opens(&alex, "first sync").changes;
    eprintln!("a whole sync: {whole:?}: {report}; {before:?} changes before, {full} after");
    for (h, home) in homes.iter().enumerate() {
        let ix = opens(home, "first sync");
        assert_eq!(ix.changes, full);
        assert_eq!(holds(&ix, &own[1 - h]), (issues, notes));
    }

    let mut outcomes = Vec::new();
    let mut killed = 0;
    let (mut early, mut apart, mut late) = (0, 0, 0);
    // Kills aimed between the latest delay that moved nothing yet and the
    // earliest that had moved everything (for a one-shot sync and for two
    // servers), learnt as the kills go; one in four anywhere.
    let mut windows = [(Duration::ZERO, whole); 2];
    for n in 0..kills {
        let ctx = format!("seed {seed}, kill {n}");
        restore(&alex, &pristine[0]);
        restore(&blair, &pristine[1]);
        // Who serves, who dials, and when the server is killed.
        let listener = rng.below(2) as usize;
        let dialler = 1 - listener;
        let live = rng.chance(0.5);
        let (nothing, everything) = windows[usize::from(live)];
        // (The two bounds cross when timings jitter: then aim around them.)
        let (low, high) = (
            nothing.min(everything).mul_f64(0.9),
            nothing.max(everything).mul_f64(1.1),
        );
        let delay = if rng.chance(0.25) {
            rng.upto(whole)
        } else {
            low + rng.upto(high - low)
        };
        let server = serve(homes[listener], &[]);
        let mut client = if live {
            homes[dialler].spawn(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--peer",
                &server.addr,
                "--json",
            ])
        } else {
            homes[dialler].spawn(&["sync", &server.addr, "--json"])
        };
        let t0 = Instant::now();
        let done_before = client.wait_timeout(delay).is_some();
        let kill_after = t0.elapsed();
        server.proc.signal("KILL");
        let server_run = server.proc.finish();
        assert_eq!(server_run.status.signal(), Some(9), "{ctx}: {server_run:?}");
        killed += 1;
        // A live dialler is killed too, at once or a little later; a one-shot
        // sync whose server vanished would wait for the idle timeout (30 s).
        let grace = if live { rng.upto(MAX_DELAY) } else { MAX_DELAY };
        if client.wait_timeout(grace).is_none() {
            client.signal("KILL");
        }
        let run = client.finish();
        killed += usize::from(run.status.signal() == Some(9));
        if run.status.code().is_some() && !run.status.success() {
            error_line(&run);
        }

        // Both homes open and hold their own history; what arrived of the
        // other's is whole.
        let ix = [opens(&alex, &ctx), opens(&blair, &ctx)];
        let mut got = [(0, 0); 2];
        for h in 0..2 {
            // Nothing runs now: the list and the export agree.
            assert_eq!(ix[h].list.len(), ix[h].issues.len(), "{ctx}");
            assert_eq!(
                holds(&ix[h], &own[h]),
                (issues, notes),
                "{ctx}: {} lost edits",
                NAMES[h]
            );
            assert!(ix[h].changes >= before[h], "{ctx}: {} lost changes", NAMES[h]);
            bodies_whole(&ix[h], &all, &ctx);
            got[h] = holds(&ix[h], &own[1 - h]);
        }
        if !live && run.status.success() {
            assert_eq!(
                got,
                [(issues, notes); 2],
                "{ctx}: a sync that said it finished moved everything"
            );
        }
        let partial = got.iter().any(|g| *g != (0, 0) && *g != (issues, notes));
        let w = &mut windows[usize::from(live)];
        if got == [(0, 0); 2] {
            w.0 = w.0.max(kill_after);
            early += 1;
        } else if got == [(issues, notes); 2] {
            w.1 = w.1.min(kill_after);
            late += 1;
        } else {
            apart += 1;
        }
        outcomes.push(format!(
            "{}'s serve killed {kill_after:?} after {} started{}: {} {:?}; {} got {:?} of {:?} (issues, notes), {} got {:?}{}",
            NAMES[listener],
            if live { "the other's serve" } else { "the other's `sync`" },
            if done_before { " (which had exited)" } else { "" },
            if live { "serve" } else { "sync" },
            run.status,
            NAMES[listener],
            got[listener],
            (issues, notes),
            NAMES[dialler],
            got[dialler],
            if partial { " (partial)" } else { "" },
        ));

        // The next sync, with a fresh server, converges.
        let server = serve(homes[listener], &[]);
        homes[dialler].ok(&["sync", &server.addr]);
        let ix = [opens(&alex, &ctx), opens(&blair, &ctx)];
        for h in 0..2 {
            assert_eq!(ix[h].changes, full, "{ctx}");
            assert_eq!(holds(&ix[h], &own[1 - h]), (issues, notes), "{ctx}");
            bodies_whole(&ix[h], &all, &ctx);
        }
        assert_eq!(
            ix[0].shared, ix[1].shared,
            "{ctx}: both homes hold the same record"
        );
        server.stop("TERM").success();
    }
    eprintln!("crash (big sync) outcomes: {outcomes:#?}");
    // The kills aim at the middle of the exchange; a long run that never
    // left the homes apart proved nothing about a half-done sync. (Three
    // kills, as in `cargo test`, may all land before or after.)
    if kills >= LONG_RUN_KILLS {
        assert!(
            apart > 0,
            "seed {seed}: none of {kills} kills of serve cut a sync mid-exchange ({early} before anything moved, {late} after everything)"
        );
    }
    eprintln!(
        "crash summary (big sync): {kills} kills of serve during a sync of {} changes ({} KiB of text) each way; \
         {} before anything moved, {apart} mid-exchange (the homes left apart), {} after everything \
         moved; {killed} processes killed; every home opened, lost nothing and converged on the next sync; whole sync {whole:?}; {:.1} s; seed {seed}",
        report[0]["changes_in"],
        own[0]
            .issues
            .values()
            .chain(&own[0].notes)
            .map(String::len)
            .sum::<usize>()
            / 1024,
        early,
        late,
        started.elapsed().as_secs_f64()
    );
}

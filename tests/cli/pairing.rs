//! Pairing between real `duet` processes over loopback QUIC: `pair host` on
//! 127.0.0.1:0, `pair join ADDR` (the code on standard input) on another home.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{
    TestHome, confirm, device_id, devices, error_line, join_with_code, last_json, pair, pair_host, pair_own,
    serve, shared, str_of,
};

/// A code for the same host that is surely wrong: the number changed.
fn wrong(code: &str) -> String {
    let (number, words) = code.split_once('-').expect("a code is NUMBER-WORD-WORD");
    let n: u32 = number.parse().expect("the code starts with a number");
    format!("{}-{words}", if n == 1 { 2 } else { n - 1 })
}

#[test]
fn pairing_joins_the_partner_and_brings_both_sides_entries() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    let (alex_dev, blair_dev) = (device_id(&alex), device_id(&blair));
    let chores = alex.add_issue("Chores split");
    let parents = alex.add_issue("Visiting parents");

    // Blair wrote things in a space of her own before pairing.
    let screens = str_of(
        &blair.json(&["issue", "add", "Screens in bed", "--body", "Phones after 11pm"]),
        "id",
    );
    blair.ok(&["issue", "note", &screens, "Talked about it on Sunday"]);
    let step = str_of(
        &blair.json(&["step", "add", &screens, "Charge my phone in the hall"]),
        "id",
    );
    blair.ok(&["checkin", "appreciate", "Thanks for cooking on Tuesday"]);
    let agreement = str_of(&blair.json(&["agreement", "add", "No phones at dinner"]), "id");

    let (hosted, joined) = pair(&alex, &blair, &[]);

    // Both show the same phrase, and agree on who joined where.
    let phrase = str_of(&hosted, "phrase");
    assert!(
        phrase.split_whitespace().count() >= 3,
        "a phrase of words: {phrase}"
    );
    assert_eq!(
        joined["phrase"], hosted["phrase"],
        "host {hosted:#} joiner {joined:#}"
    );
    assert_eq!(
        (hosted["seat"].as_str(), joined["seat"].as_str()),
        (Some("b"), Some("b"))
    );
    assert_eq!(str_of(&hosted, "peer"), blair_dev);
    assert_eq!(str_of(&joined, "peer"), alex_dev);
    assert_eq!(str_of(&hosted, "device_name"), "blair-laptop");
    assert!(joined["imported"].as_u64().is_some_and(|n| n > 0), "{joined:#}");

    // The joiner holds the host's issues, and its own.
    let on_blair: BTreeSet<String> = blair.issues().iter().map(|i| str_of(i, "id")).collect();
    for id in [&chores, &parents, &screens] {
        assert!(on_blair.contains(id), "{id} missing on the joiner: {on_blair:?}");
    }

    // The host holds everything the joiner wrote before pairing, as hers.
    let issue = alex.json(&["issue", "show", &screens]);
    assert_eq!(str_of(&issue, "title"), "Screens in bed");
    assert_eq!(str_of(&issue, "body"), "Phones after 11pm");
    assert_eq!(issue["raised_by"], json!({ "seat": "b", "name": "Blair" }));
    let notes: Vec<&str> = issue["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(|n| n["text"].as_str())
        .collect();
    assert_eq!(notes, ["Talked about it on Sunday"], "{issue:#}");
    let steps = issue["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{issue:#}");
    assert_eq!(str_of(&steps[0], "id"), step);
    assert_eq!(str_of(&steps[0], "text"), "Charge my phone in the hall");
    assert_eq!(str_of(&steps[0], "owner"), "b", "Blair's own step stays hers");
    let week = alex.json(&["checkin", "show"]);
    let mine = week["partners"]
        .as_array()
        .expect("partners")
        .iter()
        .find(|p| p["partner"]["seat"] == "b")
        .unwrap_or_else(|| panic!("no seat b in {week:#}"));
    assert_eq!(mine["partner"]["name"], "Blair");
    assert_eq!(mine["appreciations"], json!(["Thanks for cooking on Tuesday"]));
    let agreements = alex.json(&["agreement", "list"]);
    let a = agreements
        .as_array()
        .expect("agreements")
        .iter()
        .find(|a| a["id"] == agreement.as_str())
        .unwrap_or_else(|| panic!("agreement {agreement} missing on the host: {agreements:#}"));
    assert_eq!(str_of(a, "text"), "No phones at dinner");
    assert_eq!(a["created_by"]["seat"], "b");

    // Each names the other as the partner.
    let (sa, sb) = (alex.json(&["status"]), blair.json(&["status"]));
    assert_eq!(sa["me"], json!({ "seat": "a", "name": "Alex" }));
    assert_eq!(sa["partner"], json!({ "seat": "b", "name": "Blair" }));
    assert_eq!(sb["me"], json!({ "seat": "b", "name": "Blair" }));
    assert_eq!(sb["partner"], json!({ "seat": "a", "name": "Alex" }));
    assert_eq!(sa["space_id"], sb["space_id"]);

    // Both list both devices, in the right seats.
    let expected: BTreeSet<(String, String, String)> = [
        (alex_dev.clone(), "a".into(), "alex-laptop".into()),
        (blair_dev.clone(), "b".into(), "blair-laptop".into()),
    ]
    .into();
    assert_eq!(devices(&alex), expected);
    assert_eq!(devices(&blair), expected);
    let list = blair.json(&["device", "list"]);
    let joined_dev = list
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["id"] == blair_dev.as_str())
        .expect("the joiner is listed");
    assert_eq!(str_of(joined_dev, "added_by"), alex_dev);

    // Nothing is left to exchange: both hold the same shared record.
    assert_eq!(shared(&alex), shared(&blair));

    // The joiner took the host's history whole, and its log still lists
    // every change, once, newest first.
    let logged = |h: &TestHome| -> Vec<(i64, String)> {
        h.json(&["log", "--all"])
            .as_array()
            .expect("log")
            .iter()
            .map(|l| (l["seq"].as_i64().expect("seq"), str_of(l, "hash")))
            .collect()
    };
    let (on_alex, on_blair) = (logged(&alex), logged(&blair));
    let hashes = |l: &[(i64, String)]| l.iter().map(|(_, h)| h.clone()).collect::<BTreeSet<_>>();
    assert_eq!(hashes(&on_alex), hashes(&on_blair));
    assert_eq!(hashes(&on_blair).len(), on_blair.len(), "each change once");
    assert!(
        on_blair.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first: {on_blair:?}"
    );
    assert_eq!(
        blair.json(&["status"])["changes"].as_u64(),
        Some(on_blair.len() as u64)
    );
}

#[test]
fn a_wrong_code_fails_on_both_sides_and_spends_the_code() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    alex.add_issue("Chores split");
    blair.add_issue("Screens in bed");
    let (alex_before, blair_before) = (alex.snapshot(), blair.snapshot());

    let (host, code, addr) = pair_host(&alex);
    let joiner_err = join_with_code(&blair, &wrong(&code), &addr, &[]).failure();
    let host_err = error_line(&host.finish());
    // At least the side that found the mismatch says so (the other side may
    // only see the connection drop: see `a_wrong_code_is_named_on_both_sides`).
    assert!(
        host_err.contains("code did not match") || joiner_err.contains("code did not match"),
        "neither side blames the code:\nhost: {host_err}\njoiner: {joiner_err}"
    );

    // The host has exited: the code is spent, even the right one finds nobody.
    // (Nothing answers at all, so the joiner would wait for its 10 s connect
    // timeout: a live host answers within milliseconds, so 1.5 s is plenty.)
    let mut again = blair.spawn(&["pair", "join", &code, &addr]);
    let status = again.wait_timeout(Duration::from_millis(1500));
    assert!(
        status.is_none_or(|s| !s.success()),
        "a second try with the right code paired: {status:?}"
    );
    drop(again);

    // Neither home changed.
    assert_eq!(alex.snapshot(), alex_before);
    assert_eq!(blair.snapshot(), blair_before);
    assert!(alex.json(&["status"])["partner"].is_null());
}

#[test]
fn the_code_is_read_from_standard_input_and_one_in_the_arguments_is_warned_about() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");

    // A code in the arguments (here a wrong one) is still taken, with a
    // warning that other users of this computer can see it.
    let (host, code, addr) = pair_host(&alex);
    let run = blair.run(&["pair", "join", &wrong(&code), &addr]);
    assert!(!run.status.success());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(lines[0].starts_with("warning: ") && lines[0].contains("visible to other users"));
    assert!(lines[1].contains("code did not match"), "{}", run.stderr);
    drop(host);

    // `-` reads it from standard input: no warning, and the pairing completes.
    // (Every other pairing test gives only the address and pipes the code.)
    let (mut host, code, addr) = pair_host(&alex);
    let mut join = blair.spawn(&["pair", "join", "-", &addr, "--json"]);
    join.answer(&format!("{code}\n"));
    let asked = confirm(&mut host, &mut join).expect("the joiner showed a phrase");
    let run = join.finish();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let joined = last_json(run);
    let hosted = last_json(host.finish());
    assert_eq!(joined["phrase"], asked["phrase"]);
    assert_eq!(hosted["phrase"], asked["phrase"]);
    assert_eq!(str_of(&joined, "peer"), device_id(&alex));

    // With nothing on standard input there is no code: one clear error.
    let err = blair.fail(&["pair", "join", &addr]);
    assert!(err.contains("no pairing code on standard input"), "{err}");
}

#[test]
fn a_wrong_code_is_named_on_both_sides() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    for _ in 0..8 {
        let (host, code, addr) = pair_host(&alex);
        let joiner_err = join_with_code(&blair, &wrong(&code), &addr, &[]).failure();
        let host_err = error_line(&host.finish());
        assert!(joiner_err.contains("code did not match"), "joiner: {joiner_err}");
        assert!(host_err.contains("code did not match"), "host: {host_err}");
    }
}

#[test]
fn a_wrong_code_error_says_its_cause_once() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    let (host, code, addr) = pair_host(&alex);
    let joiner_err = join_with_code(&blair, &wrong(&code), &addr, &[]).failure();
    let host_err = error_line(&host.finish());
    for err in [joiner_err, host_err] {
        assert!(err.matches("did not match").count() <= 1, "{err}");
    }
}

#[test]
fn an_own_device_joins_in_the_hosts_seat_and_three_devices_converge() {
    let alex_laptop = TestHome::named("Alex", "alex-laptop");
    let alex_phone = TestHome::uninit();
    let blair = TestHome::named("Blair", "blair-laptop");
    let chores = alex_laptop.add_issue("Chores split");

    // Alex's laptop pairs another device of Alex: the phone (creating its home).
    let (hosted, joined) = pair_own(&alex_laptop, &alex_phone, &["--name", "Alex"]);
    assert_eq!(joined["phrase"], hosted["phrase"]);
    assert_eq!(
        (hosted["seat"].as_str(), joined["seat"].as_str()),
        (Some("a"), Some("a"))
    );
    let phone = alex_phone.json(&["status"]);
    assert_eq!(phone["me"], json!({ "seat": "a", "name": "Alex" }));
    assert!(phone["partner"].is_null(), "no partner yet: {phone:#}");
    let phone_dev = str_of(&phone["device"], "id");

    // Then Blair's laptop joins as the partner.
    let (hosted, joined) = pair(&alex_laptop, &blair, &[]);
    assert_eq!(joined["phrase"], hosted["phrase"]);
    assert_eq!(joined["seat"], "b");
    let seats: BTreeSet<(String, String)> = devices(&alex_laptop)
        .into_iter()
        .map(|(id, seat, _)| (id, seat))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (device_id(&alex_laptop), "a".to_string()),
        (phone_dev.clone(), "a".to_string()),
        (device_id(&blair), "b".to_string()),
    ]
    .into();
    assert_eq!(seats, expected);

    // Blair edits and syncs with Alex's laptop; the phone syncs with the laptop
    // and sees Blair's edit; the phone's own edit travels back to Blair the same way.
    let laptop = serve(&alex_laptop, &[]);
    let dates = blair.add_issue("Date nights");
    blair.ok(&["issue", "status", &chores, "discussing"]);
    blair.ok(&["sync", &laptop.addr]);
    alex_phone.ok(&["issue", "note", &chores, "From the phone"]);
    alex_phone.ok(&["sync", &laptop.addr]);
    let seen = alex_phone.json(&["issue", "show", &dates]);
    assert_eq!(seen["raised_by"], json!({ "seat": "b", "name": "Blair" }));
    assert_eq!(
        alex_phone.json(&["issue", "show", &chores])["status"],
        "discussing"
    );
    assert_eq!(
        alex_phone.json(&["status"])["partner"],
        json!({ "seat": "b", "name": "Blair" })
    );
    assert_eq!(devices(&alex_phone), devices(&alex_laptop));
    blair.ok(&["sync", &laptop.addr]);
    let note: Vec<Value> = blair.json(&["issue", "show", &chores])["notes"]
        .as_array()
        .expect("notes")
        .clone();
    assert_eq!(note.len(), 1);
    assert_eq!(note[0]["text"], "From the phone");

    let all = shared(&alex_laptop);
    assert_eq!(shared(&alex_phone), all);
    assert_eq!(shared(&blair), all);
}

#[test]
fn a_joiner_asking_for_the_hosts_seat_gets_the_seat_the_host_chose() {
    // Version 1 let the joiner say "same person" and took the host's seat:
    // a partner (or a stranger with the code) could sit as the host's person.
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    let (mut host, code, addr) = pair_host(&alex);
    let mut join = blair.spawn(&["pair", "join", &code, &addr, "--same-person", "--json"]);
    let asked = confirm(&mut host, &mut join).expect("the joiner shows a phrase");
    assert_eq!(
        asked["seat"], "b",
        "the host asks about its partner's device: {asked:#}"
    );
    let joined = join.finish();
    assert!(
        joined.stderr.contains("--same-person is ignored"),
        "stderr: {}",
        joined.stderr
    );
    let (hosted, joined) = (last_json(host.finish()), last_json(joined));
    assert_eq!(
        (hosted["seat"].as_str(), joined["seat"].as_str()),
        (Some("b"), Some("b"))
    );
    let blair_dev = device_id(&blair);
    assert!(
        devices(&alex)
            .iter()
            .any(|(id, seat, _)| *id == blair_dev && seat == "b"),
        "{:?}",
        devices(&alex)
    );
    assert_eq!(alex.json(&["status"])["me"]["seat"], "a");
}

#[test]
fn the_host_records_nothing_until_its_person_says_yes_and_a_no_admits_no_one() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    alex.add_issue("Chores split");
    blair.add_issue("Screens in bed");
    let (alex_before, blair_before) = (alex.snapshot(), blair.snapshot());
    // A no, an empty line, and the end of input (a script with nothing to
    // say) all turn the device away.
    for answer in ["n\n", "\n", ""] {
        let (mut host, code, addr) = pair_host(&alex);
        let mut join = blair.spawn(&["pair", "join", &addr, "--json"]);
        join.answer(&format!("{code}\n"));
        let shown: Value = serde_json::from_str(&join.line()).expect("JSON");
        let asked = host.json_line();
        assert_eq!(asked["confirm"]["phrase"], shown["phrase"], "{asked:#} {shown:#}");
        assert_eq!(asked["confirm"]["name"], "Blair");
        assert_eq!(asked["confirm"]["device_name"], "blair-laptop");
        // Both screens show the phrase; nothing is recorded while the person looks.
        assert_eq!(
            alex.snapshot(),
            alex_before,
            "recorded before the phrase was compared"
        );
        host.answer(answer);
        let host_err = error_line(&host.finish());
        let joiner_err = error_line(&join.finish());
        assert!(
            host_err.contains("nothing was recorded"),
            "{answer:?}: host: {host_err}"
        );
        assert!(
            joiner_err.contains("declined") && joiner_err.contains("not confirmed"),
            "{answer:?}: joiner: {joiner_err}"
        );
        assert_eq!(
            alex.snapshot(),
            alex_before,
            "{answer:?}: the host recorded the device"
        );
        assert_eq!(blair.snapshot(), blair_before, "{answer:?}: the joiner joined");
    }
    assert!(alex.json(&["status"])["partner"].is_null());
}

#[test]
fn a_partners_second_device_pairs_from_the_partners_device_not_from_the_host() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    let blair_phone = TestHome::uninit();
    pair(&alex, &blair, &[]);
    let before = alex.snapshot();

    // Alex's laptop may not put a device in Blair's seat now: refused before a code is shown.
    let refused = alex.fail(&["pair", "host", "--listen", "127.0.0.1:0"]);
    assert!(
        refused.contains("Blair already has a device") && refused.contains("--own-device"),
        "{refused}"
    );
    assert_eq!(alex.snapshot(), before);

    // From Blair's laptop, the phone joins Blair's seat, and Alex learns of it by syncing.
    let (_, joined) = pair_own(&blair, &blair_phone, &["--name", "Blair"]);
    assert_eq!(joined["seat"], "b");
    let server = serve(&blair, &[]);
    alex.ok(&["sync", &server.addr]);
    let phone = device_id(&blair_phone);
    assert!(
        devices(&alex)
            .iter()
            .any(|(id, seat, _)| *id == phone && seat == "b"),
        "{:?}",
        devices(&alex)
    );
}

//! Offline bundles (`duet bundle export|import`): sealed, signed changes in a
//! file. Round trip, duplicates, out-of-order imports, and damaged, foreign or
//! wrong files, which are refused with one clear line and change nothing.

use serde_json::Value;

use crate::util::{TestHome, couple, device_id, pair, pair_own, serve, shared, str_of, titles};

/// `path` as a command-line argument.
fn arg(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// `r[key]` as a number.
#[track_caller]
fn num(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number `{key}` in {r:#}"))
}

/// Exports a bundle of `h` to `name` in its temporary folder (with `extra`
/// options); returns the path and what `--json` reported.
#[track_caller]
fn export(h: &TestHome, name: &str, extra: &[&str]) -> (std::path::PathBuf, Value) {
    let file = h.tmp().join(name);
    let mut args = vec!["bundle", "export", arg(&file)];
    args.extend_from_slice(extra);
    let out = h.json(&args);
    assert_eq!(str_of(&out, "file"), arg(&file));
    let len = std::fs::metadata(&file).expect("the bundle file exists").len();
    assert_eq!(num(&out, "bytes"), len, "{out:#}");
    (file, out)
}

#[test]
fn a_bundle_carries_everything_to_the_partner() {
    let (alex, blair) = couple(|_| {});
    let id = str_of(
        &alex.json(&["issue", "add", "Holidays", "--body", "Where this summer?"]),
        "id",
    );
    alex.ok(&["issue", "note", &id, "The coast, maybe"]);
    alex.ok(&["step", "add", &id, "Look at train times"]);
    alex.ok(&["agreement", "add", "No work email on holiday"]);
    alex.ok(&["checkin", "appreciate", "Thanks for the map"]);
    alex.ok(&["journal", "add", "private-journal-entry-9d2c"]);

    let (file, out) = export(&alex, "to-blair.bundle", &[]);
    assert!(num(&out, "changes") >= 5, "{out:#}");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..8], b"DUETBNDL");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the bundle file is owner-only: {mode:o}");
    }
    // Sealed: no word of the record, and not the journal (which is never in it).
    for s in [
        "Holidays",
        "The coast, maybe",
        "Alex",
        "private-journal-entry-9d2c",
    ] {
        assert!(
            !crate::util::contains_bytes(&bytes, s),
            "`{s}` in the bundle file"
        );
    }

    let r = blair.json(&["bundle", "import", arg(&file)]);
    assert!(num(&r, "applied") >= 5, "{r:#}");
    assert_eq!(num(&r, "waiting"), 0, "{r:#}");
    assert!(
        device_id(&alex).starts_with(&str_of(&r, "from")),
        "the bundle comes from Alex's device: {r:#}"
    );
    let shown = blair.json(&["issue", "show", &id]);
    assert_eq!(shown["body"], "Where this summer?");
    assert_eq!(shown["notes"].as_array().map(Vec::len), Some(1), "{shown:#}");
    assert_eq!(shown["steps"].as_array().map(Vec::len), Some(1), "{shown:#}");
    assert!(
        blair
            .ok(&["agreement", "list"])
            .contains("No work email on holiday")
    );
    assert_eq!(shared(&alex), shared(&blair));
    assert!(
        !blair
            .ok(&["journal", "list"])
            .contains("private-journal-entry-9d2c")
    );

    // The text output says what happened.
    let again = blair.ok(&["bundle", "import", arg(&file)]);
    assert!(again.contains("0 new changes applied"), "{again}");
    let text = alex.ok(&["bundle", "export", arg(&alex.tmp().join("text.bundle"))]);
    assert!(text.starts_with("Wrote ") && text.contains("sealed"), "{text}");
}

/// Exporting over an existing file that others may read leaves an
/// owner-only file, like a new one.
#[cfg(unix)]
#[test]
fn a_bundle_written_over_an_existing_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let alex = TestHome::new();
    let file = alex.tmp().join("old.bundle");
    std::fs::write(&file, b"an older file").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    alex.ok(&["bundle", "export", arg(&file)]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the bundle file is owner-only: {mode:o}");
}

#[test]
fn importing_the_same_bundle_twice_changes_nothing_the_second_time() {
    let (alex, blair) = couple(|_| {});
    let id = alex.add_issue("Twice");
    alex.ok(&["issue", "note", &id, "Once is enough"]);
    let (file, out) = export(&alex, "twice.bundle", &[]);

    let first = blair.json(&["bundle", "import", arg(&file)]);
    assert!(num(&first, "applied") >= 2, "{first:#}");
    let after_first = blair.snapshot();

    let second = blair.json(&["bundle", "import", arg(&file)]);
    assert_eq!(num(&second, "applied"), 0, "{second:#}");
    assert_eq!(num(&second, "waiting"), 0, "{second:#}");
    assert_eq!(num(&second, "changes"), num(&out, "changes"), "{second:#}");
    assert_eq!(num(&second, "already_had"), num(&second, "changes"), "{second:#}");
    assert_eq!(
        blair.snapshot(),
        after_first,
        "the second import changed the home"
    );
    assert_eq!(shared(&alex), shared(&blair));

    // Alex importing its own bundle is a duplicate too.
    let own = alex.json(&["bundle", "import", arg(&file)]);
    assert_eq!(num(&own, "applied"), 0, "{own:#}");
}

/// Out of order needs a device that missed the first bundle while the
/// partner's other device did not: with one device each, `--since-partner-saw`
/// only advances when the partner has everything before, so each bundle
/// holds all the earlier ones. Here Blair's laptop catches up directly after
/// the first bundle, so the second holds only the newer edits; Blair's phone
/// gets both bundles, the second first.
#[test]
fn bundles_imported_out_of_order_wait_then_apply() {
    let alex = TestHome::named("Alex", "alex-laptop");
    let blair = TestHome::named("Blair", "blair-laptop");
    let phone = TestHome::named("Blair", "blair-phone");
    pair(&alex, &blair, &[]);
    pair_own(&blair, &phone, &[]);

    let first_issue = alex.add_issue("First batch");
    alex.ok(&["issue", "note", &first_issue, "Note of the first batch"]);
    let (one, b1) = export(&alex, "one.bundle", &["--since-partner-saw"]);

    // Blair's laptop catches up directly.
    let server = serve(&alex, &["--no-discovery"]);
    blair.ok(&["sync", &server.addr, "--no-discovery"]);
    server.stop("TERM").success();
    assert!(titles(&blair).contains("First batch"));

    let second_issue = alex.add_issue("Second batch");
    alex.ok(&["issue", "note", &first_issue, "Note of the second batch"]);
    alex.ok(&["step", "add", &second_issue, "Step of the second batch"]);
    let (two, b2) = export(&alex, "two.bundle", &["--since-partner-saw"]);
    let (_, full) = export(&alex, "full.bundle", &[]);
    eprintln!(
        "bundle sizes: first since-partner-saw {} changes / {} bytes, second {} / {}, full {} / {}",
        num(&b1, "changes"),
        num(&b1, "bytes"),
        num(&b2, "changes"),
        num(&b2, "bytes"),
        num(&full, "changes"),
        num(&full, "bytes")
    );
    assert!(num(&b2, "bytes") < num(&full, "bytes"), "{b2:#} {full:#}");
    assert!(num(&b2, "changes") < num(&full, "changes"), "{b2:#} {full:#}");
    assert!(num(&b2, "changes") >= 3, "{b2:#}");

    // The phone gets the second bundle first: nothing of it can apply yet.
    let before = shared(&phone);
    let r = phone.json(&["bundle", "import", arg(&two)]);
    assert_eq!(num(&r, "applied"), 0, "{r:#}");
    assert_eq!(num(&r, "waiting"), num(&b2, "changes"), "{r:#}");
    assert_eq!(shared(&phone), before, "nothing visible yet");
    let text = phone.ok(&["bundle", "import", arg(&two)]);
    assert!(text.contains("wait for earlier changes"), "{text}");

    // Then the first: both batches are there.
    let r = phone.json(&["bundle", "import", arg(&one)]);
    assert_eq!(
        num(&r, "applied"),
        num(&b1, "changes") + num(&b2, "changes"),
        "{r:#}"
    );
    assert_eq!(num(&r, "waiting"), 0, "{r:#}");
    for t in ["First batch", "Second batch"] {
        assert!(titles(&phone).contains(t), "{t}");
    }
    let notes = phone.json(&["issue", "show", &first_issue])["notes"].to_string();
    assert!(notes.contains("Note of the first batch") && notes.contains("Note of the second batch"));
    assert_eq!(shared(&phone), shared(&alex));
}

/// Imports `file` on `h`, which must fail cleanly (exit code 1, one
/// `error: ` line) and change nothing; returns the line.
#[track_caller]
fn refused(h: &TestHome, file: &std::path::Path) -> String {
    let before = h.snapshot();
    let run = h.run(&["bundle", "import", arg(file)]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let err = run.failure();
    assert_eq!(h.snapshot(), before, "a refused import changed the home");
    err
}

#[test]
fn damaged_and_wrong_files_are_refused_and_change_nothing() {
    let (alex, blair) = couple(|_| {});
    let id = alex.add_issue("Tamper with me");
    alex.ok(&["issue", "note", &id, "Every byte counts"]);
    let (file, _) = export(&alex, "good.bundle", &[]);
    let good = std::fs::read(&file).unwrap();
    let header_len = u32::from_be_bytes(good[9..13].try_into().unwrap()) as usize;
    let body_start = 13 + header_len;
    assert!(body_start < good.len(), "a header of {header_len} bytes");
    eprintln!("bundle: {} bytes, header {header_len} bytes", good.len());
    let before = shared(&blair);
    let write = |name: &str, bytes: &[u8]| {
        let p = blair.tmp().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let flipped = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    let damaged = "error: this bundle is damaged or altered";

    // One bit changed: in the middle of the sealed body, in its last byte, in
    // the header's nonce (authenticated with the body), in the header length.
    let middle = body_start + (good.len() - body_start) / 2;
    for (what, bytes) in [
        ("middle", flipped(middle)),
        ("last byte", flipped(good.len() - 1)),
        ("nonce", flipped(13 + 16 + 16 + 3)),
        ("header length", flipped(12)),
    ] {
        let err = refused(&blair, &write("flipped.bundle", &bytes));
        assert!(err.starts_with(damaged), "{what}: {err}");
        assert!(err.contains("nothing from it was applied"), "{what}: {err}");
    }

    // Cut short: in the body, in the header, right after the magic.
    for cut in [good.len() - 1, good.len() / 2, body_start - 5, 10] {
        let err = refused(&blair, &write("cut.bundle", &good[..cut]));
        assert!(err.starts_with(damaged), "cut at {cut}: {err}");
    }

    // Not a bundle: a JSON export, an empty file, a missing file.
    let json = alex.ok(&["export", "--format", "json"]);
    let err = refused(&blair, &write("export.json", json.as_bytes()));
    assert_eq!(err, "error: this is not a duet bundle");
    let err = refused(&blair, &write("empty.bundle", b""));
    assert!(err.contains("not a duet bundle"), "{err}");
    let missing = blair.tmp().join("missing.bundle");
    let err = refused(&blair, &missing);
    assert!(err.contains(arg(&missing)), "{err}");

    assert_eq!(shared(&blair), before);
    assert!(!titles(&blair).contains("Tamper with me"));
    // The good file still imports.
    blair.ok(&["bundle", "import", arg(&file)]);
    assert!(titles(&blair).contains("Tamper with me"));
}

#[test]
fn a_bundle_for_another_space_is_refused() {
    let (alex, blair) = couple(|_| {});
    alex.add_issue("Ours");
    let eve = TestHome::named("Eve", "eve-laptop");
    eve.add_issue("Eve's");
    let (eves, _) = export(&eve, "eve.bundle", &[]);
    let (ours, _) = export(&alex, "ours.bundle", &[]);

    let err = refused(&blair, &eves);
    assert_eq!(err, "error: this bundle is for another space");
    assert!(!titles(&blair).contains("Eve's"));
    let err = refused(&eve, &ours);
    assert_eq!(err, "error: this bundle is for another space");
    assert!(!titles(&eve).contains("Ours"));
}

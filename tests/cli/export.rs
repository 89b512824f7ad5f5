//! `duet export`: JSON, Markdown and the raw automerge document, to stdout or a file.

use serde_json::Value;

use crate::util::{ME, TestHome, keys, sorted, str_of};

/// The magic bytes every saved automerge document starts with.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

fn filled() -> (TestHome, String) {
    let h = TestHome::new();
    let id = str_of(
        &h.json(&[
            "issue",
            "add",
            "Chores",
            "--body",
            "Who does what",
            "--tag",
            "home",
        ]),
        "id",
    );
    h.ok(&["issue", "note", &id, "We made a rota"]);
    let s = str_of(
        &h.json(&["step", "add", &id, "Make a rota", "--due", "2026-12-01"]),
        "id",
    );
    h.ok(&["step", "done", &s, "--outcome", "partly"]);
    h.ok(&["step", "add", &id, "Stick to it", "--owner", "both"]);
    h.ok(&["checkin", "appreciate", "You cooked", "--week", "2026-W10"]);
    h.ok(&["checkin", "rate", "8", "--week", "2026-W10"]);
    h.ok(&["checkin", "time", "date", "120", "--week", "2026-W10"]);
    h.ok(&["agreement", "add", "No phones at dinner", "--kind", "ritual"]);
    (h, id)
}

fn without_time(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("exported_at");
    v
}

#[test]
fn json_holds_everything() {
    let (h, id) = filled();
    let v: Value = serde_json::from_str(&h.ok(&["export", "--format", "json"])).unwrap();
    assert_eq!(
        keys(&v),
        sorted(&[
            "space_id",
            "exported_at",
            "partners",
            "devices",
            "issues",
            "checkins",
            "agreements"
        ])
    );
    assert_eq!(v["space_id"], h.json(&["status"])["space_id"]);
    assert_eq!(
        v["partners"],
        serde_json::json!([{ "seat": "a", "name": ME }]),
        "only partners who joined"
    );
    assert_eq!(v["devices"], h.json(&["device", "list"]));
    assert_eq!(v["issues"], h.json(&["issue", "list"]));
    assert_eq!(v["checkins"], h.json(&["checkin", "list"]));
    assert_eq!(v["agreements"], h.json(&["agreement", "list"]));
    assert_eq!(v["issues"][0]["id"], id.as_str());
    assert_eq!(v["issues"][0]["steps"].as_array().unwrap().len(), 2);
    assert!(str_of(&v, "exported_at").ends_with('Z'));
    // JSON is the default format.
    let default: Value = serde_json::from_str(&h.ok(&["export"])).unwrap();
    assert_eq!(without_time(default), without_time(v));
}

#[test]
fn markdown_reads_like_a_document() {
    let (h, id) = filled();
    let md = h.ok(&["export", "--format", "markdown"]);
    for want in [
        format!("# duet: {ME}\n"),
        "## Issues\n".to_string(),
        format!("### Chores `{}`", &id[..6]),
        format!("- status: open · kind: unclassified · raised by {ME} on "),
        "- tags: home".to_string(),
        "Who does what".to_string(),
        format!("- [x] Make a rota (owner: {ME}, due 2026-12-01, partly)"),
        "- [ ] Stick to it (owner: both)".to_string(),
        format!("- We made a rota ({ME}, "),
        "## Check-ins\n".to_string(),
        "### 2026-W10".to_string(),
        "Quality time: 120 of 360 minutes.".to_string(),
        "- appreciates: You cooked".to_string(),
        "- rating: 8/10".to_string(),
        "- date: 120 min".to_string(),
        "## Agreements\n".to_string(),
        "- No phones at dinner (ritual, v1, awaiting acceptance)".to_string(),
    ] {
        assert!(md.contains(&want), "markdown lacks {want:?}:\n{md}");
    }
    assert_eq!(
        h.ok(&["export", "-f", "md"]).lines().count(),
        md.lines().count(),
        "`md` is markdown"
    );
}

#[test]
fn markdown_of_an_empty_home() {
    let h = TestHome::new();
    let md = h.ok(&["export", "--format", "markdown"]);
    assert_eq!(md.matches("_None._").count(), 3, "{md}");
}

#[test]
fn automerge_is_the_raw_document() {
    let (h, _) = filled();
    let r = h.run(&["export", "--format", "automerge"]);
    let bytes = r.raw.clone();
    r.success();
    assert!(bytes.len() > 100, "{} bytes", bytes.len());
    assert_eq!(bytes[..4], AUTOMERGE_MAGIC, "not an automerge document");
    let again = h.run(&["export", "-f", "am"]);
    assert_eq!(again.raw, bytes, "the same document saves to the same bytes");
}

#[test]
fn output_file_is_written() {
    let (h, _) = filled();
    for (format, name) in [
        ("json", "out.json"),
        ("markdown", "out.md"),
        ("automerge", "out.automerge"),
    ] {
        let path = h.tmp().join(name);
        let r = h.run(&["export", "--format", format, "-o", path.to_str().unwrap()]);
        let stderr = r.stderr.clone();
        let stdout = r.success();
        assert!(stdout.is_empty(), "-o writes nothing to stdout: {stdout}");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{} not written: {e}", path.display()));
        assert_eq!(
            stderr,
            format!("Exported {} bytes to {}.\n", bytes.len(), path.display())
        );
        match format {
            "json" => {
                let file: Value = serde_json::from_slice(&bytes).unwrap();
                let out: Value = serde_json::from_str(&h.ok(&["export"])).unwrap();
                assert_eq!(without_time(file), without_time(out));
            }
            "markdown" => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.starts_with(&format!("# duet: {ME}\n")), "{text}");
            }
            _ => {
                assert_eq!(bytes[..4], AUTOMERGE_MAGIC);
                assert_eq!(bytes, h.run(&["export", "-f", "automerge"]).raw);
            }
        }
    }
    let leftovers: Vec<String> = std::fs::read_dir(h.tmp())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("duet-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn output_file_is_replaced_whole() {
    let (h, _) = filled();
    let path = h.tmp().join("export.json");
    std::fs::write(&path, "x".repeat(1 << 20)).unwrap();
    h.ok(&["export", "--output", path.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the old content is gone");
    assert_eq!(v["issues"][0]["title"], "Chores");
}

#[cfg(unix)]
#[test]
fn export_files_are_owner_only_and_never_written_through_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let (h, _) = filled();
    h.ok(&["journal", "add", "only mine to read"]);
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    for (format, name) in [
        ("json", "out.json"),
        ("markdown", "out.md"),
        ("automerge", "out.automerge"),
    ] {
        let path = h.tmp().join(name);
        let private: &[&str] = if format == "automerge" {
            &[]
        } else {
            &["--private"]
        };
        let mut args = vec!["export", "--format", format, "-o", path.to_str().unwrap()];
        args.extend_from_slice(private);
        h.ok(&args);
        assert_eq!(mode(&path), 0o600, "{format}: a new file");
        // An existing, world-readable file is replaced by an owner-only one.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        h.ok(&args);
        assert_eq!(mode(&path), 0o600, "{format}: a replaced file");
    }
    // The old code wrote through `<name>.duet-tmp`, following a symlink
    // another user could plant there; a symlink at the destination itself is
    // replaced, not followed.
    let victim = h.tmp().join("victim");
    std::fs::write(&victim, "theirs").unwrap();
    let path = h.tmp().join("journal.json");
    std::os::unix::fs::symlink(&victim, path.with_extension("duet-tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    h.ok(&["export", "--private", "-o", path.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs");
    assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    assert_eq!(mode(&path), 0o600);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("only mine to read")
    );
}

#[test]
fn export_changes_nothing() {
    let (h, _) = filled();
    let before = h.snapshot();
    h.ok(&["export", "-f", "automerge"]);
    h.ok(&["export", "-f", "markdown", "--private"]);
    assert_eq!(h.snapshot(), before);
}

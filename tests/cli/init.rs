//! `duet init`, `duet status`, `duet device list`, and how the home is found.

use std::process::Stdio;

use crate::util::{BIN, ME, TestHome, keys, sorted, str_of};

#[test]
fn init_creates_a_home_and_says_where() {
    let h = TestHome::uninit();
    assert!(!h.path().exists());
    let out = h.ok(&["init", "--name", "Sam", "--device-name", "laptop"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        format!("Created a home for Sam at {}.", h.path().display())
    );
    assert!(lines[1].starts_with("Device laptop (fingerprint "), "{out}");
    assert!(h.db().is_file(), "init should create {}", h.db().display());
}

#[cfg(unix)]
#[test]
fn init_keeps_the_home_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let h = TestHome::new();
    let dir_mode = std::fs::metadata(h.path()).unwrap().permissions().mode() & 0o777;
    let db_mode = std::fs::metadata(h.db()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "home folder mode {dir_mode:o}");
    assert_eq!(db_mode, 0o600, "database mode {db_mode:o}");
}

#[test]
fn init_json_is_the_status() {
    let h = TestHome::uninit();
    let v = h.json(&["init", "--name", "Alex", "--device-name", "phone"]);
    assert_eq!(v["me"]["name"], "Alex");
    assert_eq!(v["me"]["seat"], "a");
    assert_eq!(v["device"]["name"], "phone");
    assert_eq!(v["home"], h.path().display().to_string());
    assert_eq!(v["changes"], 1);
    assert!(v["partner"].is_null());
}

#[test]
fn status_json_has_stable_field_names() {
    let h = TestHome::new();
    let v = h.json(&["status"]);
    assert_eq!(
        keys(&v),
        sorted(&[
            "home",
            "space_id",
            "me",
            "partner",
            "device",
            "issues",
            "this_week",
            "changes",
            "relay"
        ])
    );
    assert_eq!(keys(&v["me"]), sorted(&["seat", "name"]));
    assert_eq!(keys(&v["device"]), sorted(&["id", "name", "fingerprint"]));
    assert_eq!(keys(&v["issues"]), sorted(&["total", "active", "open_steps"]));
    assert_eq!(keys(&v["this_week"]), sorted(&["week", "started", "minutes"]));

    assert_eq!(v["me"]["name"], ME);
    assert_eq!(v["device"]["name"], "laptop");
    let id = str_of(&v["device"], "id");
    assert_eq!(id.len(), 64, "a device id is a hex public key: {id}");
    let fp = str_of(&v["device"], "fingerprint");
    assert_eq!(
        fp.replace('-', ""),
        id[..fp.replace('-', "").len()],
        "fingerprint {fp} is the key's start"
    );
    let space = str_of(&v, "space_id");
    assert_eq!(space.len(), 32, "{space}");
    assert!(space.bytes().all(|b| b.is_ascii_hexdigit()));
    let week = str_of(&v["this_week"], "week");
    assert!(
        week.len() == 8 && week.as_bytes()[4] == b'-' && week.as_bytes()[5] == b'W',
        "{week}"
    );
    assert_eq!(v["this_week"]["started"], false);
    assert_eq!(v["this_week"]["minutes"], 0);
    assert_eq!(v["issues"]["total"], 0);
}

#[test]
fn status_counts_follow_the_record() {
    let h = TestHome::new();
    let a = h.add_issue("Chores");
    let b = h.add_issue("Money");
    h.add_issue("In-laws");
    h.ok(&["issue", "status", &a, "resolved"]);
    h.ok(&["issue", "status", &b, "parked"]);
    h.ok(&["step", "add", &a, "Make a rota"]);
    let s = h.ok(&["step", "add", &a, "Buy a dishwasher"]);
    assert!(s.starts_with("Added step "), "{s}");
    let steps = h.json(&["step", "list"]);
    let done_id = str_of(&steps[0], "id");
    h.ok(&["step", "done", &done_id]);
    h.ok(&["checkin", "time", "date", "90"]);

    let v = h.json(&["status"]);
    assert_eq!(v["issues"]["total"], 3);
    assert_eq!(
        v["issues"]["active"], 1,
        "resolved and parked issues are not active"
    );
    assert_eq!(v["issues"]["open_steps"], 1);
    assert_eq!(v["this_week"]["started"], true);
    assert_eq!(v["this_week"]["minutes"], 90);
    // init, 3 issues, 2 statuses, 2 steps, 1 done, 1 check-in entry.
    assert_eq!(v["changes"], 10);

    let text = h.ok(&["status"]);
    assert!(text.contains("1 active of 3, 1 open steps"), "{text}");
    assert!(
        text.contains("check-in started, 90 min of quality time"),
        "{text}"
    );
}

#[test]
fn status_text_names_the_rows() {
    let h = TestHome::new();
    let out = h.ok(&["status"]);
    let rows: Vec<(&str, &str)> = out
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k, v.trim())
        })
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        names,
        [
            "home",
            "you",
            "partner",
            "device",
            "fingerprint",
            "issues",
            "this",
            "changes"
        ],
        "{out}"
    );
    assert_eq!(rows[0].1, h.path().display().to_string());
    assert_eq!(rows[1].1, ME);
    assert_eq!(rows[2].1, "not paired yet");
    assert!(rows[3].1.starts_with("laptop ("), "{out}");
    assert_eq!(rows[5].1, "0 active of 0, 0 open steps");
    assert!(
        rows[6].1.contains("no check-in yet, 0 min of quality time"),
        "{out}"
    );
    assert_eq!(rows[7].1, "1");
}

#[test]
fn device_list_shows_this_device() {
    let h = TestHome::new();
    let out = h.ok(&["device", "list"]);
    assert!(out.starts_with(" DEVICE") || out.starts_with("DEVICE"), "{out}");
    let row = out.lines().nth(1).expect("one device row");
    assert!(row.contains("laptop (this device)"), "{out}");
    assert!(row.contains(ME), "{out}");
    let v = h.json(&["device", "list"]);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "laptop");
    let status = h.json(&["status"]);
    assert_eq!(list[0]["id"], status["device"]["id"]);
}

#[test]
fn home_comes_from_duet_home_when_no_flag_is_given() {
    let h = TestHome::new();
    let out = std::process::Command::new(BIN)
        .args(["status", "--json"])
        .env("DUET_HOME", h.path())
        .env("NO_COLOR", "1")
        .env("HOME", h.tmp())
        .env("XDG_DATA_HOME", h.tmp().join("xdg-data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["home"], h.path().display().to_string());
}

#[test]
fn home_flag_wins_over_duet_home() {
    let h = TestHome::new();
    let other = TestHome::uninit();
    let out = h
        .command(&["status", "--json"])
        .env("DUET_HOME", other.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["home"], h.path().display().to_string());
    assert!(!other.path().exists(), "the DUET_HOME folder must not be touched");
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let h = TestHome::new();
    let out = std::process::Command::new(BIN)
        .args(["issue", "list", "--json", "--home"])
        .arg(h.path())
        .env_remove("DUET_HOME")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

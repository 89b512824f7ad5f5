//! The raw automerge export opens in the official JavaScript implementation.
//!
//! Needs `node` and `@automerge/automerge` installed under `target/js` (`.ci/run`
//! installs it; locally: `npm install --prefix target/js @automerge/automerge`).
//! Without them the test says so and passes, except where
//! `DUET_REQUIRE_NODE` is set (`.ci/run` sets it), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use duet::model::NewIssue;
use duet::{ExportFormat, Home, InitOptions};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn javascript_automerge_loads_the_export() {
    let js_dir = std::env::var_os("DUET_JS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/js"));
    let module = js_dir.join("node_modules/@automerge/automerge/package.json");
    let node = Command::new("node").arg("--version").output();
    if !module.is_file() || node.is_err() {
        let why = format!("needs node and {} (see the test's docs)", module.display());
        common::skip("DUET_REQUIRE_NODE", &why);
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let mut home = Home::init(
        &dir.path().join("h"),
        &InitOptions {
            name: "Sam".into(),
            device_name: None,
        },
    )
    .unwrap();
    let issue = home
        .add_issue(&NewIssue {
            title: "Dishes — fair split".into(),
            body: "Ünïcode body".into(),
            ..Default::default()
        })
        .unwrap();
    home.add_note(issue.id.as_str(), "a note").unwrap();
    let file = dir.path().join("doc.automerge");
    std::fs::write(&file, home.export(ExportFormat::Automerge, false).unwrap()).unwrap();

    let out = Command::new("node")
        .arg(workspace().join("tests/js/load.cjs"))
        .arg(&file)
        .env("DUET_JS_DIR", &js_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["schema"], 1);
    assert_eq!(seen["issues"][0]["id"], issue.id.as_str());
    assert_eq!(seen["issues"][0]["title"], "Dishes — fair split");
    assert_eq!(seen["issues"][0]["body"], "Ünïcode body");
    assert_eq!(seen["issues"][0]["notes"][0], "a note");
    let heads = home.read(|d| d.get_heads()).unwrap();
    assert_eq!(seen["heads"][0], heads[0].to_string());
}

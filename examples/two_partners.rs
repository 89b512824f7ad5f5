//! duet's main job: two partners, one shared record, on their own devices.
//!
//! Plays both partners on one machine: two homes, pairing over loopback QUIC,
//! offline edits on both sides (the same issue's body edited by both, and its
//! status set to different values), a sync, a step passed on through a
//! mailbox relay while the two are apart, and the merged record printed with
//! the conflict shown as something to talk about.
//!
//! Run it with `cargo run -p duet --example two_partners`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet::model::{CheckInEntry, IssueEdit, IssueKind, IssueStatus, NewIssue, Rating, TimeKind};
use duet::{ExportFormat, Home, InitOptions, PairHost, ServeOptions, Who, WhoseDevice};

type Shared = Arc<Mutex<Home>>;

fn with<T>(
    home: &Shared,
    f: impl FnOnce(&mut Home) -> duet::Result<T>,
) -> Result<T, Box<dyn std::error::Error>> {
    let mut h = home.lock().map_err(|_| "a home's lock was poisoned")?;
    Ok(f(&mut h)?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let init = |name: &str, device: &str| InitOptions {
        name: name.into(),
        device_name: Some(device.into()),
    };

    // Each partner starts on their own laptop. Alex writes something before
    // they pair; it comes along.
    let sam: Shared = Arc::new(Mutex::new(Home::init(
        &dir.path().join("sam"),
        &init("Sam", "Sam's laptop"),
    )?));
    let alex: Shared = Arc::new(Mutex::new(Home::init(
        &dir.path().join("alex"),
        &init("Alex", "Alex's laptop"),
    )?));
    let dishes = with(&sam, |h| {
        h.add_issue(&NewIssue {
            title: "Who does the dishes".into(),
            body: "The sink fills up and it always falls to one of us.".into(),
            kind: Some(IssueKind::Solvable),
            ..Default::default()
        })
    })?;
    with(&alex, |h| {
        h.add_issue(&NewIssue {
            title: "Phones at dinner".into(),
            kind: Some(IssueKind::Perpetual),
            ..Default::default()
        })
    })?;

    // Pairing: Sam's laptop hosts (for Sam's partner), Alex's joins with the
    // code. Both then show a phrase; Sam admits Alex's laptop only once the
    // two screens show the same words.
    let host = PairHost::bind(sam.clone(), "127.0.0.1:0".parse()?, None, WhoseDevice::Partner)?;
    let (code, addr) = (host.code().to_string(), host.local_addr()?);
    println!("Sam's laptop shows the pairing code {code} and waits at {addr}.");
    let (show, alex_screen) = tokio::sync::oneshot::channel();
    let joiner = alex.clone();
    let joining = tokio::spawn(async move {
        duet::pair_join(joiner, &code, addr, move |phrase: &str| {
            let _ = show.send(phrase.to_string());
        })
        .await
    });
    let asking = host.wait(Duration::from_secs(60)).await?;
    let on_alex = alex_screen.await?;
    println!(
        "Sam's laptop asks: does {}'s screen show \"{}\"? Alex's shows \"{on_alex}\".",
        asking.name(),
        asking.phrase()
    );
    let hosted = if asking.phrase() == on_alex {
        asking.admit().await?
    } else {
        asking.reject("the phrases differ").await?;
        return Err("the phrases differ: someone is in between".into());
    };
    let joined = joining.await??;
    println!(
        "Paired. Both laptops showed the phrase \"{}\" / \"{}\": the same, so no one is in between.\n",
        hosted.phrase, joined.phrase
    );

    // Offline, each edits the same issue: different parts of the body, and
    // different statuses.
    let id = dishes.id.to_string();
    with(&sam, |h| {
        h.edit_issue(
            &id,
            &IssueEdit {
                body: Some("The sink fills up after dinner and it always falls to one of us.".into()),
                ..Default::default()
            },
        )?;
        h.set_status(&id, IssueStatus::Discussing)?;
        h.add_step(
            &id,
            "Wash up Monday, Wednesday and Friday",
            Who::Me,
            Some("2026-12-04"),
        )
    })?;
    with(&alex, |h| {
        h.edit_issue(
            &id,
            &IssueEdit {
                body: Some("The sink fills up and it always falls to one of us. I'd like a rota.".into()),
                ..Default::default()
            },
        )?;
        h.set_status(&id, IssueStatus::Agreed)?;
        let week = duet::this_week();
        h.checkin_add(
            week,
            &CheckInEntry::Appreciation("Sam cooked on Thursday.".into()),
        )?;
        h.checkin_add(week, &CheckInEntry::Rating(Rating::new(8)?))?;
        h.checkin_add(week, &CheckInEntry::Time(TimeKind::Date, 120))?;
        h.journal_add("Private: I'm still upset about last weekend.")
    })?;

    // They meet again: Sam's laptop serves, Alex's syncs with it over QUIC.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        peers: Vec::new(),
        poll: Duration::from_millis(100),
        relay: None,
        discovery: false,
    };
    let serving = tokio::spawn(duet::serve(sam.clone(), opts, stop, Some(ready_tx)));
    let report = duet::sync_once(alex.clone(), ready.await?).await?;
    let _ = stop_tx.send(true);
    serving.await??;
    println!(
        "Synced over QUIC: {} changes arrived on Alex's laptop, {} bytes sent, {} bytes received, {} ms.\n",
        report.changes_in, report.bytes_out, report.bytes_in, report.millis
    );

    // Both hold the same record; the status conflict is shown, with who set what.
    let merged = with(&sam, |h| h.issue(&id))?;
    let on_alex = with(&alex, |h| h.issue(&id))?;
    assert_eq!(merged.body, on_alex.body, "both laptops hold the same body");
    println!("Merged body: {}", merged.body);
    for c in &merged.conflicts {
        let values: Vec<String> = c
            .values
            .iter()
            .map(|v| format!("{} (set by {})", v.value, v.set_by.name))
            .collect();
        println!("To talk about: {} was set to {}.", c.field, values.join(" and "));
    }
    // A week apart, never online at the same time: Sam leaves a step at a
    // mailbox relay (here in memory, in this process); Alex picks it up later.
    // The relay holds only sealed bytes.
    let (relay_stop_tx, relay_stop) = tokio::sync::watch::channel(false);
    let (relay_ready_tx, relay_ready) = tokio::sync::oneshot::channel();
    let relay_opts = duet::relay_server::RelayOptions::new("127.0.0.1:0".parse()?);
    let relay = tokio::spawn(duet::relay_server::run(
        relay_opts,
        relay_stop,
        Some(relay_ready_tx),
    ));
    let relay_addr = relay_ready.await?.to_string();
    with(&sam, |h| {
        h.add_step(&id, "Buy a second drying rack", Who::Me, None)
            .map(|_| ())
    })?;
    let posted = duet::relay_sync(sam.clone(), &relay_addr).await?;
    let fetched = duet::relay_sync(alex.clone(), &relay_addr).await?;
    let _ = relay_stop_tx.send(true);
    relay.await??;
    println!(
        "Through the relay: Sam posted {} sealed bytes; later Alex fetched them and applied {} changes.\n",
        posted.bytes_out, fetched.changes_in
    );

    println!("\nThe shared record, as Sam's laptop now holds it:\n");
    let record = with(&sam, |h| h.export(ExportFormat::Markdown, false))?;
    println!("{}", String::from_utf8_lossy(&record));
    let journal_on_sam = with(&sam, |h| h.journal())?;
    println!(
        "Alex's private journal stayed on Alex's laptop ({} entries on Sam's).",
        journal_on_sam.len()
    );
    Ok(())
}

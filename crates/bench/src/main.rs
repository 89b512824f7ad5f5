//! duet's benchmark harness: measures duet where users feel it (the first
//! sync of a new device, a reconnect after offline edits, an edit appearing on
//! the partner's device, opening the app, the cost of an edit, and how these
//! grow with history) side by side with what users would pick instead, in one
//! run, as ratios.
//!
//! ```text
//! cargo run --release -p duet-bench -- [--quick] [--csv]
//! ```
//!
//! It prints a Markdown table (scenario, metric, duet, baseline, ratio,
//! target, met?), or with `--csv` the same rows as
//! `scenario,metric,duet,baseline_name,baseline,ratio,target,met`. Progress
//! goes to standard error. `--quick` uses the one- and five-year histories
//! and fewer repeats; the full run adds twenty years.
//!
//! # Layout
//! - [`workload`]: the seeded generator of couple histories and edits;
//! - [`homes`]: writes a history into two real homes (partner a's laptop,
//!   partner b's phone) through the store;
//! - [`net`]: duet over QUIC, automerge's sync in memory, samod over TCP, a
//!   file over TCP;
//! - [`scenarios`]: the six scenarios;
//! - [`report`]: rows, Markdown and CSV; [`sys`]: the machine.

mod homes;
mod net;
mod report;
mod scenarios;
mod sys;
mod workload;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::report::Row;
use crate::scenarios::{AtSize, Config};

/// The seed of every history (each size adds its years).
const SEED: u64 = 0xD0E7;

const USAGE: &str = "usage: duet-bench [--quick] [--csv] [--keep]

  --quick   one- and five-year histories, fewer repeats (under two minutes)
  --csv     print CSV rows instead of a Markdown table
  --keep    keep the generated homes (their folder is printed)
  --only L  run only the scenarios in the comma-separated list L (e.g. 1,3)";

struct Args {
    quick: bool,
    csv: bool,
    keep: bool,
    only: Option<Vec<u32>>,
}

impl Args {
    fn runs(&self, scenario: u32) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&scenario))
    }
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        quick: false,
        csv: false,
        keep: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--csv" => args.csv = true,
            "--keep" => args.keep = true,
            "--only" => {
                let list = it.next().context("--only needs a list of scenarios")?;
                let only = list
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<u32>()
                            .with_context(|| format!("not a scenario: {n:?}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                args.only = Some(only);
            }
            // Scenario 4's baseline runs as a child process of this binary.
            "--load-and-list" => {
                let file = it.next().context("--load-and-list needs a file")?;
                scenarios::load_and_list(&PathBuf::from(file))?;
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(args))
}

fn main() -> Result<()> {
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let cfg = Config::new(args.quick);
    let duet = sys::duet_binary()?;
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("duet-bench-").tempdir()?;
    let work = tmp.path().to_path_buf();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());

    step("generating the five-year history");
    let h5 = homes::build(&work.join("5y"), 5, SEED + 5)?;
    step(&format!(
        "five years: {} changes, {} bytes saved, generated in {:.1}s",
        h5.changes,
        h5.saved_bytes,
        h5.took.as_secs_f64()
    ));
    step("generating the one-year history");
    let h1 = homes::build(&work.join("1y"), 1, SEED + 1)?;
    let h20 = if args.quick {
        None
    } else {
        step("generating the twenty-year history");
        let h = homes::build(&work.join("20y"), 20, SEED + 20)?;
        step(&format!(
            "twenty years: {} changes, {} bytes saved, generated in {:.1}s",
            h.changes,
            h.saved_bytes,
            h.took.as_secs_f64()
        ));
        Some(h)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows: Vec<Row> = Vec::new();

    let mut first5 = None;
    if args.runs(1) {
        step("1: first sync of a new device");
        let f = rt.block_on(scenarios::first_sync(&h5, &work, cfg.first_sync_repeats, true))?;
        rows.extend(scenarios::first_sync_rows(&h5, &f));
        first5 = Some(f);
    }
    if args.runs(2) {
        step("2: reconnect after offline edits");
        rows.extend(rt.block_on(scenarios::reconnect(&h5, &work, &cfg))?);
    }
    if args.runs(3) {
        step("3: live edit propagation");
        rows.extend(rt.block_on(scenarios::live(&h5, &work, &duet, cfg.live_edits))?);
    }
    let mut open5 = None;
    if args.runs(4) {
        step("4: open and list");
        let o = scenarios::open_list(&h5, &work, &duet, cfg.open_repeats)?;
        rows.extend(scenarios::open_list_rows(&h5, &o));
        open5 = Some(o);
    }
    let mut edit5 = None;
    if args.runs(5) {
        step("5: cost of an edit");
        let e = scenarios::edit_cost(&h5, &work, cfg.edits, cfg.rewrites)?;
        rows.extend(scenarios::edit_cost_rows(&h5, &e, cfg.edits));
        edit5 = Some(e);
    }
    if args.runs(6) {
        step("6: growth");
        let mut sizes = Vec::new();
        for h in std::iter::once(&h1).chain(Some(&h5)).chain(h20.as_ref()) {
            step(&format!("6: {} years", h.years));
            let big = h.years > 5;
            let repeats = if big {
                cfg.first_sync_repeats.div_ceil(2)
            } else {
                cfg.first_sync_repeats
            };
            let first = match first5.filter(|_| h.years == 5) {
                Some(f) => f,
                None => rt.block_on(scenarios::first_sync(h, &work, repeats, false))?,
            };
            let open = match open5.filter(|_| h.years == 5) {
                Some(o) => o,
                None => scenarios::open_list(h, &work, &duet, cfg.open_repeats)?,
            };
            let edit = match edit5.filter(|_| h.years == 5) {
                Some(e) => e,
                None => {
                    let rewrites = if big { cfg.rewrites / 3 } else { cfg.rewrites };
                    scenarios::edit_cost(h, &work, cfg.edits, rewrites)?
                }
            };
            sizes.push(AtSize {
                history: h,
                first,
                open,
                edit,
            });
        }
        rows.extend(scenarios::growth_rows(&sizes));
    }
    step("done");

    if args.csv {
        print!("{}", report::csv(&rows));
    } else {
        println!(
            "Histories (seeded): {}.\n",
            std::iter::once(&h1)
                .chain(Some(&h5))
                .chain(h20.as_ref())
                .map(|h| format!(
                    "{} years: {} changes, {} KB saved",
                    h.years,
                    h.changes,
                    h.saved_bytes / 1024
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        print!("{}", report::markdown(&rows));
        let met = rows.iter().filter(|r| r.met() == Some(true)).count();
        let missed = rows.iter().filter(|r| r.met() == Some(false)).count();
        println!(
            "\nTargets met: {met}, missed: {missed}. Run took {:.0}s.",
            started.elapsed().as_secs_f64()
        );
    }
    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept the homes in {}", kept.display());
    }
    Ok(())
}

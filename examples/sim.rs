//! Runs duet's deterministic sync simulator over many seeds and prints what it
//! did: edits, messages, faults injected by kind, heal rounds, failures.
//!
//! ```text
//! cargo run --release -p duet-sync --example sim --features sim -- --seeds 10000
//! cargo run --release -p duet-sync --example sim --features sim -- --seed 42 --trace
//! ```
//!
//! Flags: `--seeds N` (how many, from `--start S`, default 0), `--seed S` (one
//! seed, with its report), `--trace` (print every event of a single seed),
//! `--threads N` (seeds run side by side; each run is single-threaded and
//! deterministic), `--lenient` (count the former bugs' patterns instead of failing), and the config flags of `duet_sync::sim::Config::set_flag`
//! (`--devices 3..4`, `--edits 40`, `--cut 0.02`, `--no-faults`, ...).

use std::process::ExitCode;
use std::time::Instant;

use duet_sync::sim::{Config, Faults, Sim, Summary};

struct Args {
    start: u64,
    seeds: u64,
    one: Option<u64>,
    threads: usize,
    config: Config,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        start: 0,
        seeds: 100,
        one: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        config: Config::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument {flag:?}"));
        };
        match name {
            "trace" => {
                args.config.trace = true;
                continue;
            }
            "no-faults" => {
                args.config.faults = Faults::none();
                continue;
            }
            "lenient" => {
                args.config.strict = false;
                continue;
            }
            "help" | "h" => return Err(String::new()),
            _ => {}
        }
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("--{name}: {v:?} is not a number"))
        };
        match name {
            "seeds" => args.seeds = num(&value)?,
            "start" => args.start = num(&value)?,
            "seed" => args.one = Some(num(&value)?),
            "threads" => args.threads = num(&value)?.max(1) as usize,
            _ => {
                if !args.config.set_flag(name, &value)? {
                    return Err(format!("unknown flag --{name}"));
                }
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!(
                "usage: sim [--seeds N] [--start S] [--seed S [--trace]] [--threads N] [--no-faults] [--lenient] [config flags]"
            );
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.one {
        return one(seed, &args.config);
    }
    let started = Instant::now();
    let summary = many(&args);
    let wall = started.elapsed();
    println!("{summary}");
    println!(
        "wall time: {:.1} s on {} threads ({:.1} ms per seed)",
        wall.as_secs_f64(),
        args.threads,
        wall.as_secs_f64() * 1000.0 / args.seeds.max(1) as f64
    );
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "failed seeds: {:?}",
            summary.failures.iter().map(|f| f.seed).collect::<Vec<_>>()
        );
        ExitCode::FAILURE
    }
}

fn one(seed: u64, config: &Config) -> ExitCode {
    let started = Instant::now();
    let outcome = Sim::run(seed, config);
    let report = match &outcome {
        Ok(r) => r,
        Err(f) => &f.report,
    };
    for line in &report.trace {
        println!("{line}");
    }
    let mut summary = Summary::default();
    summary.add(&outcome);
    println!("{summary}");
    println!(
        "digest {:016x}, {:.1} ms",
        report.digest,
        started.elapsed().as_secs_f64() * 1000.0
    );
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn many(args: &Args) -> Summary {
    let threads = args.threads.min(args.seeds.max(1) as usize);
    let progress = std::sync::atomic::AtomicU64::new(0);
    let mut total = Summary::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let progress = &progress;
                scope.spawn(move || {
                    let mut summary = Summary::default();
                    let mut i = t as u64;
                    while i < args.seeds {
                        let seed = args.start + i;
                        let outcome = Sim::run(seed, &args.config);
                        if let Err(f) = &outcome {
                            eprintln!("{f}\n");
                        }
                        summary.add(&outcome);
                        let done = progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if done.is_multiple_of(1000) {
                            eprintln!("{done} seeds run");
                        }
                        i += threads as u64;
                    }
                    summary
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(s) => total.merge(s),
                Err(_) => eprintln!("error: a simulation thread panicked"),
            }
        }
    });
    total.failures.sort_by_key(|f| f.seed);
    total
}

//! `sim`: runs seeds of the simulation. `--seed S` replays one (and prints its report);
//! `--seeds N` runs N from `--first` (default 0) on `--jobs` threads, each seed on one thread
//! and alone deciding its run. Every failure is printed with the command that replays it; the
//! summary gives seeds and steps per second.

use std::{process::ExitCode, sync::Mutex, time::Instant};

use clap::Parser;
use processor_sim::{run, Config, Failure, Report};

#[derive(Parser)]
#[command(
    about = "A seeded deterministic simulation of four processors, their enclaves, a coordinator and a chain"
)]
struct Args {
    /// Replays this one seed.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Threads running seeds.
    #[arg(long, default_value_t = 1)]
    jobs: u64,
    /// Steps with traffic and faults per seed.
    #[arg(long, default_value_t = Config::default().steps)]
    steps: u64,
    /// Quiet steps at most after them.
    #[arg(long, default_value_t = Config::default().drain)]
    drain: u64,
    /// Runs without faults.
    #[arg(long)]
    no_faults: bool,
}

type Outcome = (u64, Result<Report, Failure>);

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        steps: args.steps,
        drain: args.drain,
        faults: !args.no_faults,
    };
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first.saturating_add(args.seeds)).collect(),
    };
    let jobs = usize::try_from(args.jobs.max(1)).unwrap_or(1);
    let start = Instant::now();
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for job in 0..jobs {
            let (seeds, config, outcomes) = (&seeds, &config, &outcomes);
            scope.spawn(move || {
                for seed in seeds.iter().skip(job).step_by(jobs) {
                    let outcome = run(*seed, config);
                    if let Err(failure) = &outcome {
                        println!("{failure}");
                    }
                    if let Ok(mut outcomes) = outcomes.lock() {
                        outcomes.push((*seed, outcome));
                        let done = outcomes.len();
                        if done % 1000 == 0 {
                            let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
                            eprintln!("{done} seeds done, {failed} failed");
                        }
                    }
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_default();
    let seconds = start.elapsed().as_secs_f64();
    let steps: u64 = outcomes
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().ok())
        .map(|report| report.steps)
        .sum();
    let failures = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .count();
    let (replaced, children, conflicts) = outcomes
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().ok())
        .fold((0, 0, 0), |(replaced, children, conflicts), report| {
            (
                replaced + report.replaced,
                children + report.children,
                conflicts + report.conflicts,
            )
        });
    if let (Some(_), [(seed, Ok(report))]) = (args.seed, outcomes.as_slice()) {
        println!("seed {seed}: {report:?}");
    }
    println!(
        "{} seeds, {failures} failed, {steps} steps in {seconds:.1} s on {jobs} threads: {:.2} seeds/s, {:.0} steps/s; {replaced} stuck plans replaced, {children} paid for by a child, {conflicts} conflicting spends injected",
        outcomes.len(),
        outcomes.len() as f64 / seconds,
        steps as f64 / seconds,
    );
    if failures == 0 && outcomes.len() == seeds.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

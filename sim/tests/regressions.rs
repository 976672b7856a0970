//! Seeds that found a defect, each kept: they run in every `cargo test`. A seed's run depends
//! on the code it drives, so a later change may move a seed away from its defect; the comment
//! says what each one exercised when it was added, and the defect's own regression test (next to
//! the code) stays the precise guard.

use processor_sim::{run, Config};

/// (seed, what it found).
const REGRESSIONS: &[(u64, &str)] = &[
    (
        1,
        "a coordinator restart sends Serai block 21 again under new message ids; a processor \
         that handled a Serai block at its last number again scheduled its burns twice, and \
         the validators' acknowledgements of it differed (found with the stale-block refusal \
         removed from `Processor::substrate_block`)",
    ),
    (24, "the same, at Serai block 9, within 23 steps"),
];

#[test]
fn every_regression_seed_runs_clean() {
    let mut failures = Vec::new();
    for (seed, found) in REGRESSIONS {
        if let Err(failure) = run(*seed, &Config::default()) {
            failures.push(format!("{failure}\n  (it once found: {found})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! Replays the fuzz targets' seed corpora (made from the repository's fixtures) and the inputs of
//! past findings through the same target functions the fuzzers run (`fuzz/src/targets.rs`), so the
//! targets keep compiling and every past finding stays fixed without building libFuzzer.
//! `fuzz/run.sh` runs the coverage-guided fuzzers themselves; it has this test write the seeds
//! (`SLUICE_FUZZ_CORPUS=<dir>`).

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_seed_goes_through_its_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = targets::seeds(root);
    let out = std::env::var_os("SLUICE_FUZZ_CORPUS").map(std::path::PathBuf::from);
    for (name, target) in targets::TARGETS {
        let list = seeds.get(name).map(Vec::as_slice).unwrap_or_default();
        assert!(
            list.len() >= 3,
            "target {name} has only {} seeds",
            list.len()
        );
        let started = std::time::Instant::now();
        for (i, seed) in list.iter().enumerate() {
            let one = std::time::Instant::now();
            target(seed);
            let took = one.elapsed();
            assert!(
                // A hang guard: every seed takes milliseconds.
                took < std::time::Duration::from_secs(60),
                "{name} took {took:?} on seed {i}: {:?}",
                String::from_utf8_lossy(&seed[..seed.len().min(300)])
            );
            if let Some(dir) = &out {
                let dir = dir.join(name);
                std::fs::create_dir_all(&dir).expect("corpus directory");
                std::fs::write(dir.join(format!("seed-{i:04}")), seed).expect("seed file");
            }
        }
        eprintln!("{name}: {} seeds in {:?}", list.len(), started.elapsed());
    }
}

/// Inputs the fuzzers found failing once, kept under `fuzz/regressions/<target>/`.
#[test]
fn past_fuzz_findings_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for (name, target) in targets::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("regression input");
            target(&data);
        }
    }
}

/// Found by the `duration` fuzzer: kube's Go-duration parser panicked (and with it the
/// controller, reading a Rollout's pause) on each of these.
#[test]
fn duration_with_a_sign_in_the_middle_or_an_overflow_is_refused_instead_of_panicking() {
    use sluice::api::duration::{parse_go, parse_go_or_seconds};
    for bad in [
        "-5s-5s",
        "5s+-5s",
        "-5s",
        "99999999999999999999999h",
        "2562047788015215h2562047788015215h",
        "1.5.5s",
        ".s",
        "5x",
    ] {
        assert!(parse_go(bad).is_err() || bad == "-5s", "{bad:?}");
        assert!(parse_go_or_seconds(bad).is_err(), "{bad:?}");
    }
    for good in [
        "0",
        "-0",
        "+5s",
        ".5s",
        "5.s",
        "1h30m",
        "1h.5m",
        "2562047h",
        "3\u{00b5}s",
    ] {
        assert!(parse_go(good).is_ok(), "{good:?}");
    }
    assert_eq!(
        parse_go_or_seconds("1h.5m"),
        Ok(std::time::Duration::from_secs(3630))
    );
}

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
                took < std::time::Duration::from_secs(5),
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

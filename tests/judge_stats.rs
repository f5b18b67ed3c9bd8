//! The judge's statistics against simulated canaries: thousands of seeded Bernoulli streams (and
//! latency histograms) looked at scrape by scrape, as the controller looks at them. A good canary
//! is failed in at most α of the runs; a bad one is caught, with about the number of requests
//! Wald's approximation predicts.

use sluice::analysis::judge::{
    Counts, Decision, Look, Phase, Settings, Sprt, judge, latency_alpha, mann_whitney,
};

/// splitmix64: a small seeded generator, so every run of the test sees the same streams.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SCENARIO: Sprt = Sprt {
    p0: 0.05,
    p1: 0.30,
    alpha: 0.01,
    beta: 0.01,
};

/// Runs one stream at true error rate `p`, `1..=max_batch` requests per look, until the test
/// decides or `cap` requests: (decision, requests seen).
fn stream(t: &Sprt, p: f64, max_batch: u64, cap: u64, rng: &mut Rng) -> (Decision, u64) {
    let (mut n, mut k) = (0u64, 0u64);
    while n < cap {
        let batch = 1 + rng.below(max_batch);
        for _ in 0..batch {
            n += 1;
            if rng.uniform() < p {
                k += 1;
            }
        }
        let d = t.evaluate(n, k).decision;
        if d != Decision::Continue {
            return (d, n);
        }
    }
    (Decision::Continue, n)
}

#[test]
fn a_good_canary_is_failed_in_at_most_alpha_of_runs() {
    let runs = 5000;
    for (p, batch) in [(SCENARIO.p0, 1), (SCENARIO.p0, 8), (0.02, 5), (0.0, 5)] {
        let mut rng = Rng(0x5EED + (p * 1000.0) as u64 + batch);
        let failed = (0..runs)
            .filter(|_| stream(&SCENARIO, p, batch, 20_000, &mut rng).0 == Decision::Worse)
            .count();
        let rate = failed as f64 / runs as f64;
        assert!(
            rate <= SCENARIO.alpha,
            "at p = {p} (batches up to {batch}): {failed} of {runs} good canaries failed, \
             {rate} > alpha {}",
            SCENARIO.alpha
        );
    }
}

#[test]
fn a_bad_canary_is_caught_with_the_expected_number_of_requests() {
    let runs = 5000;
    for (p, batch) in [(0.30, 1), (0.30, 5), (0.5, 1)] {
        let mut rng = Rng(0xBAD + batch);
        let mut caught = 0;
        let mut total = 0u64;
        for _ in 0..runs {
            let (d, n) = stream(&SCENARIO, p, batch, 20_000, &mut rng);
            if d == Decision::Worse {
                caught += 1;
            }
            total += n;
        }
        let mean = total as f64 / runs as f64;
        let asn = SCENARIO.expected_sample_number(p);
        // At p = p1 the miss rate is beta itself: allow three standard errors of sampling.
        let se = (SCENARIO.beta * (1.0 - SCENARIO.beta) / runs as f64).sqrt();
        assert!(
            1.0 - caught as f64 / runs as f64 <= SCENARIO.beta + 3.0 * se,
            "at p = {p}: only {caught} of {runs} bad canaries caught"
        );
        // Wald's figure leaves out the overshoot past the boundary and the batching; a look per
        // request stays within 30% of it, batches of up to 5 add at most about 3 requests.
        let slack = if batch == 1 {
            1.3 * asn
        } else {
            1.3 * asn + 3.0
        };
        assert!(
            mean >= 0.8 * asn && mean <= slack,
            "at p = {p} (batches up to {batch}): mean {mean:.1} requests, Wald's approximation \
             {asn:.1}"
        );
    }
    // The scenario of the closed-loop benchmark: about 14 requests at 30% errors.
    let asn = SCENARIO.expected_sample_number(0.30);
    assert!((13.0..16.0).contains(&asn), "{asn}");
}

#[test]
fn a_bad_canary_at_5_percent_against_1_percent_is_caught_too() {
    let t = Sprt {
        p0: 0.01,
        p1: 0.05,
        alpha: 0.01,
        beta: 0.01,
    };
    let mut rng = Rng(77);
    let runs = 2000;
    let caught = (0..runs)
        .filter(|_| stream(&t, 0.05, 5, 50_000, &mut rng).0 == Decision::Worse)
        .count();
    assert!(caught as f64 / runs as f64 >= 0.99, "{caught} of {runs}");
    let good = (0..runs)
        .filter(|_| stream(&t, 0.01, 5, 50_000, &mut rng).0 == Decision::Worse)
        .count();
    assert!(good as f64 / runs as f64 <= 0.01, "{good} of {runs}");
}

fn settings(latency: bool) -> Settings {
    Settings {
        sprt: SCENARIO,
        relative: false,
        latency_floor: latency.then_some(0.1),
    }
}

#[test]
fn the_judge_never_decides_without_canary_requests() {
    let look = Look {
        canary: Counts::default(),
        baseline: Some(Counts {
            requests: 500,
            errors: 0,
        }),
        ..Default::default()
    };
    assert_eq!(judge(&settings(false), &look).phase, Phase::Continue);
    let late = Look {
        past_deadline: true,
        ..look
    };
    let j = judge(&settings(false), &late);
    assert_eq!(j.phase, Phase::Inconclusive);
    assert!(j.sentence.contains("no canary request"), "{}", j.sentence);
}

#[test]
fn the_judge_says_it_in_one_sentence_with_its_figures() {
    let look = Look {
        canary: Counts {
            requests: 16,
            errors: 5,
        },
        baseline: Some(Counts {
            requests: 150,
            errors: 0,
        }),
        ..Default::default()
    };
    let j = judge(&settings(false), &look);
    assert_eq!(j.phase, Phase::Failed);
    assert_eq!(
        j.sentence,
        "canary errors 31% of 16 requests vs 0% of 150 on stable: worse with 99% confidence"
    );
    let keys: Vec<&str> = j.details.iter().map(|(k, _)| *k).collect();
    for k in [
        "canaryRequests",
        "canaryErrors",
        "canaryErrorRate",
        "baselineRequests",
        "baselineErrorRate",
        "logLikelihoodRatio",
        "failBoundary",
        "passBoundary",
        "confidence",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    let good = Look {
        canary: Counts {
            requests: 200,
            errors: 1,
        },
        ..look
    };
    let j = judge(&settings(false), &good);
    assert_eq!(j.phase, Phase::Successful, "{}", j.sentence);
    assert!(j.sentence.contains("not worse than 5.0%"), "{}", j.sentence);
}

#[test]
fn relative_to_baseline_moves_the_thresholds_up_to_the_baseline_rate() {
    let mut s = settings(false);
    s.relative = true;
    // The stable version fails 20% too: a canary at 20% is not worse.
    let look = Look {
        canary: Counts {
            requests: 200,
            errors: 40,
        },
        baseline: Some(Counts {
            requests: 2000,
            errors: 400,
        }),
        ..Default::default()
    };
    assert_ne!(judge(&s, &look).phase, Phase::Failed);
    assert_eq!(judge(&settings(false), &look).phase, Phase::Failed);
}

/// Cumulative buckets of `n` requests drawn from `sample`.
fn histogram(
    bounds: &[f64],
    n: u64,
    rng: &mut Rng,
    sample: impl Fn(&mut Rng) -> f64,
) -> Vec<(f64, f64)> {
    let mut counts = vec![0.0; bounds.len()];
    for _ in 0..n {
        let x = sample(rng);
        let i = bounds
            .iter()
            .position(|b| x <= *b)
            .unwrap_or(bounds.len() - 1);
        counts[i] += 1.0;
    }
    let mut cum = 0.0;
    bounds
        .iter()
        .zip(counts)
        .map(|(b, c)| {
            cum += c;
            (*b, cum)
        })
        .collect()
}

const BOUNDS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, f64::INFINITY];

#[test]
fn latency_of_a_copy_is_never_worse_and_300ms_more_is() {
    let base = |r: &mut Rng| 0.002 + 0.03 * r.uniform() * r.uniform();
    let runs = 2000;
    let mut rng = Rng(9);
    let mut false_fails = 0;
    for _ in 0..runs {
        // Several looks per run, with the spending of alpha over looks.
        let mut failed = false;
        for look in 1..=10u64 {
            let c = histogram(&BOUNDS, 5 * look, &mut rng, base);
            let b = histogram(&BOUNDS, 50 * look, &mut rng, base);
            let r = mann_whitney(&c, &b).unwrap();
            if r.p_value < latency_alpha(0.01, look) && r.effect >= 0.6 {
                failed = true;
            }
        }
        if failed {
            false_fails += 1;
        }
    }
    assert!(
        false_fails as f64 / runs as f64 <= 0.01,
        "{false_fails} of {runs} copies judged slower"
    );
    // 300 ms more: caught at the first look with 15 canary requests.
    let slow = |r: &mut Rng| 0.3 + base(r);
    let c = histogram(&BOUNDS, 15, &mut rng, slow);
    let b = histogram(&BOUNDS, 150, &mut rng, base);
    let j = judge(
        &settings(true),
        &Look {
            canary: Counts {
                requests: 15,
                errors: 0,
            },
            baseline: Some(Counts {
                requests: 150,
                errors: 0,
            }),
            latency: Some((c, b)),
            latency_look: 1,
            past_deadline: false,
        },
    );
    assert_eq!(j.phase, Phase::Failed, "{}", j.sentence);
    assert!(j.sentence.contains("slower"), "{}", j.sentence);
}

#[test]
fn a_small_but_significant_latency_difference_below_the_floor_passes() {
    // Canary 1 bucket slower for 10% of requests: significant with many requests, effect < 0.6.
    let mut rng = Rng(3);
    let base = |r: &mut Rng| 0.002 + 0.03 * r.uniform();
    let c = histogram(&BOUNDS, 20_000, &mut rng, |r| {
        if r.uniform() < 0.1 { 0.2 } else { base(r) }
    });
    let b = histogram(&BOUNDS, 20_000, &mut rng, base);
    let r = mann_whitney(&c, &b).unwrap();
    assert!(r.p_value < 1e-6, "{r:?}");
    assert!(r.effect < 0.6, "{r:?}");
    let j = judge(
        &settings(true),
        &Look {
            canary: Counts {
                requests: 20_000,
                errors: 0,
            },
            baseline: Some(Counts {
                requests: 20_000,
                errors: 0,
            }),
            latency: Some((c, b)),
            latency_look: 1,
            past_deadline: false,
        },
    );
    assert_eq!(j.phase, Phase::Successful, "{}", j.sentence);
}

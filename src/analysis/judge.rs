//! The statistics of the `judge` provider, pure: a sequential probability ratio test on the
//! canary's failed requests, and a Mann–Whitney U test on latency histogram buckets.
//!
//! # Error rate: Wald's SPRT on Bernoulli trials
//! Every canary request is a trial that fails with an unknown probability `p`. The test weighs
//! H0: `p <= p0` (acceptable) against H1: `p >= p1` (bad), `p0 < p1`. After `n` requests of
//! which `k` failed, the log-likelihood ratio is
//! `Λ = k·ln(p1/p0) + (n−k)·ln((1−p1)/(1−p0))`. The canary is judged worse once
//! `Λ >= ln((1−β)/α)`, acceptable once `Λ <= ln(β/(1−α))`, and the test continues in between
//! (A. Wald, *Sequential Tests of Statistical Hypotheses*, Ann. Math. Statist. 16(2), 1945).
//! The ratio is a nonnegative martingale under H0, so by Ville's inequality the chance that it
//! ever reaches the upper boundary is at most `α/(1−β)` however often it is looked at: the test
//! may be evaluated after every scrape without inflating the false-fail rate. Looking at batches
//! (a scrape adds several requests at once) only overshoots the boundaries, which lowers both
//! error rates. Among all tests with these error rates it needs the fewest requests on average at
//! `p0` and `p1` (Wald–Wolfowitz optimality), which is what a canary wants: the fewest users on a
//! bad version.
//!
//! # Latency: Mann–Whitney U from histogram buckets
//! Requests in the same bucket are ties. `U` counts, over every (canary, baseline) pair, 1 when
//! the canary request is in a higher bucket and ½ when both are in the same one; the normal
//! approximation with the tie correction gives a one-sided p-value. As Kayenta does, a
//! significant difference is not enough: the effect (the probability that a canary request is
//! slower than a baseline one, `U/(n·m)`, ½ for no difference) must also exceed `0.5 + floor`.
//! The test is not sequential by itself, so look `j` (counting looks with new canary data) uses
//! `α·6/(π²·j²)`, whose sum over all looks is `α` (a Bonferroni spending over an unbounded
//! number of looks).

/// Settings of the error-rate test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sprt {
    /// Highest acceptable error rate (H0: `p <= p0`).
    pub p0: f64,
    /// Error rate that must be caught (H1: `p >= p1`).
    pub p1: f64,
    /// Risk of failing an acceptable canary (1 − confidence).
    pub alpha: f64,
    /// Risk of passing a canary at `p1` (1 − power).
    pub beta: f64,
}

/// What the error-rate test says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The canary is worse than acceptable, with the configured confidence.
    Worse,
    /// Enough evidence that the canary is acceptable.
    Acceptable,
    /// Not enough evidence either way yet.
    Continue,
}

/// The error-rate test's statistic and boundaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SprtOutcome {
    /// Log-likelihood ratio of H1 against H0.
    pub llr: f64,
    /// Boundary at or above which the canary is worse: `ln((1−β)/α)`.
    pub upper: f64,
    /// Boundary at or below which the canary is acceptable: `ln(β/(1−α))`.
    pub lower: f64,
    /// The decision.
    pub decision: Decision,
}

impl Sprt {
    /// Checks the settings: `0 <= p0 < p1 <= 1` and `α, β` in (0, 1). Returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!(
                "confidence {} must be strictly between 0 and 1",
                1.0 - self.alpha
            ));
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return Err(format!(
                "power {} must be strictly between 0 and 1",
                1.0 - self.beta
            ));
        }
        if !(self.p0 > 0.0 && self.p0 < 1.0) {
            return Err(format!(
                "acceptable error rate {} must be strictly between 0 and 1",
                self.p0
            ));
        }
        if !(self.p1 > self.p0 && self.p1 < 1.0) {
            return Err(format!(
                "unacceptable error rate {} must be above the acceptable one ({}) and below 1",
                self.p1, self.p0
            ));
        }
        Ok(())
    }

    /// Upper boundary `ln((1−β)/α)`.
    pub fn upper(&self) -> f64 {
        ((1.0 - self.beta) / self.alpha).ln()
    }

    /// Lower boundary `ln(β/(1−α))`.
    pub fn lower(&self) -> f64 {
        (self.beta / (1.0 - self.alpha)).ln()
    }

    /// Log-likelihood ratio added by one failed request.
    fn fail_step(&self) -> f64 {
        (self.p1 / self.p0).ln()
    }

    /// Log-likelihood ratio added by one good request (negative).
    fn ok_step(&self) -> f64 {
        ((1.0 - self.p1) / (1.0 - self.p0)).ln()
    }

    /// The test after `n` requests of which `failed` failed.
    pub fn evaluate(&self, n: u64, failed: u64) -> SprtOutcome {
        let failed = failed.min(n);
        let llr = failed as f64 * self.fail_step() + (n - failed) as f64 * self.ok_step();
        let (upper, lower) = (self.upper(), self.lower());
        let decision = if llr >= upper {
            Decision::Worse
        } else if llr <= lower {
            Decision::Acceptable
        } else {
            Decision::Continue
        };
        SprtOutcome {
            llr,
            upper,
            lower,
            decision,
        }
    }

    /// Fewest requests, all failed, that reach the upper boundary.
    pub fn min_requests_to_fail(&self) -> u64 {
        (self.upper() / self.fail_step()).ceil().max(1.0) as u64
    }

    /// Wald's approximation of the expected number of requests the test needs when the true
    /// error rate is `p`: `E[N] ≈ (L(p)·ln B + (1−L(p))·ln A) / E[z]`, where `L(p)` is the chance
    /// of accepting H0 and `E[z]` the expected log-likelihood ratio of one request. This is the
    /// statistical minimum blast radius of a bad canary at rate `p`.
    pub fn expected_sample_number(&self, p: f64) -> f64 {
        let (a, b) = (self.upper(), self.lower());
        let (s1, s0) = (self.fail_step(), self.ok_step());
        let ez = p * s1 + (1.0 - p) * s0;
        if ez.abs() < 1e-12 {
            // At the balance point: E[N] = −ln A·ln B / E[z²].
            let ez2 = p * s1 * s1 + (1.0 - p) * s0 * s0;
            return -a * b / ez2;
        }
        // L(p) from Wald's operating characteristic: find h ≠ 0 with
        // p·(p1/p0)^h + (1−p)·((1−p1)/(1−p0))^h = 1, then L = (A^h − 1)/(A^h − B^h).
        let f = |h: f64| p * (s1 * h).exp() + (1.0 - p) * (s0 * h).exp() - 1.0;
        // The root has the sign opposite to E[z].
        let (mut lo, mut hi) = if ez > 0.0 { (-1.0, -1e-9) } else { (1e-9, 1.0) };
        while f(lo).signum() == f(hi).signum() && lo.abs() < 1e6 && hi.abs() < 1e6 {
            if ez > 0.0 {
                lo *= 2.0;
            } else {
                hi *= 2.0;
            }
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if f(mid).signum() == f(lo).signum() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let h = 0.5 * (lo + hi);
        let (ah, bh) = ((a * h).exp(), (b * h).exp());
        let l = (ah - 1.0) / (ah - bh);
        (l * b + (1.0 - l) * a) / ez
    }
}

/// One histogram of request durations: cumulative counts per upper bound (`le`), as Prometheus
/// keeps them, the last bound `+Inf`.
pub type Buckets = [(f64, f64)];

/// What the latency test found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyOutcome {
    /// Canary requests compared.
    pub canary: u64,
    /// Baseline requests compared.
    pub baseline: u64,
    /// Probability that a canary request is slower than a baseline one (½: no difference).
    pub effect: f64,
    /// Standardised U statistic (positive: canary slower).
    pub z: f64,
    /// One-sided p-value of "canary slower".
    pub p_value: f64,
}

/// Counts per bucket from cumulative counts, both histograms brought to the union of their
/// bounds.
fn per_bucket(canary: &Buckets, baseline: &Buckets) -> (Vec<f64>, Vec<f64>) {
    let mut bounds: Vec<f64> = canary.iter().chain(baseline).map(|(le, _)| *le).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let cum_at = |h: &Buckets, le: f64| -> f64 {
        // The cumulative count at `le` is the one of the largest bound not above it.
        h.iter()
            .filter(|(b, _)| *b <= le)
            .map(|(_, c)| *c)
            .fold(0.0, f64::max)
    };
    let mut c = Vec::with_capacity(bounds.len());
    let mut b = Vec::with_capacity(bounds.len());
    let (mut pc, mut pb) = (0.0, 0.0);
    for le in &bounds {
        let (cc, cb) = (cum_at(canary, *le), cum_at(baseline, *le));
        c.push((cc - pc).max(0.0));
        b.push((cb - pb).max(0.0));
        pc = cc;
        pb = cb;
    }
    (c, b)
}

/// Mann–Whitney U of canary against baseline latencies, from cumulative bucket counts.
/// `None` when either side has no request.
pub fn mann_whitney(canary: &Buckets, baseline: &Buckets) -> Option<LatencyOutcome> {
    let (c, b) = per_bucket(canary, baseline);
    let n: f64 = c.iter().sum();
    let m: f64 = b.iter().sum();
    if n < 1.0 || m < 1.0 {
        return None;
    }
    let mut u = 0.0;
    let mut below = 0.0;
    let mut ties = 0.0;
    for (ci, bi) in c.iter().zip(&b) {
        u += ci * (below + 0.5 * bi);
        below += bi;
        let t = ci + bi;
        ties += t * t * t - t;
    }
    let total = n + m;
    let var = n * m / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)).max(1.0));
    let mean = n * m / 2.0;
    let z = if var > 0.0 {
        (u - mean) / var.sqrt()
    } else {
        0.0
    };
    Some(LatencyOutcome {
        canary: n.round() as u64,
        baseline: m.round() as u64,
        effect: u / (n * m),
        z,
        p_value: normal_upper_tail(z),
    })
}

/// The significance level of latency look `j` (1-based): `α·6/(π²·j²)`.
pub fn latency_alpha(alpha: f64, look: u64) -> f64 {
    let j = look.max(1) as f64;
    alpha * 6.0 / (std::f64::consts::PI * std::f64::consts::PI * j * j)
}

/// `P(Z > z)` for a standard normal `Z` (W. J. Cody's rational approximation of erfc through
/// the complementary error function, accurate to about 1e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes' erfcc (Chebyshev fit, fractional error below 1.2e-7).
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Cumulative bucket counts `(le, count)`, owned.
pub type Histogram = Vec<(f64, f64)>;

/// Requests and failed requests counted since the run's first look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
}

impl Counts {
    /// Failed share, 0 without requests.
    pub fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A judge metric's settings, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The error-rate test with the configured thresholds.
    pub sprt: Sprt,
    /// When true, the acceptable rate is at least the baseline's measured rate (and the
    /// unacceptable one moves up by as much).
    pub relative: bool,
    /// Latency effect-size floor, when latency is compared.
    pub latency_floor: Option<f64>,
}

/// What one look at the counts shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Look {
    /// Canary counts.
    pub canary: Counts,
    /// Baseline counts, when the template has baseline queries.
    pub baseline: Option<Counts>,
    /// Canary and baseline latency buckets (cumulative, since the first look).
    pub latency: Option<(Histogram, Histogram)>,
    /// Number of this look among the looks with new canary requests (1-based).
    pub latency_look: u64,
    /// True when the metric's deadline has passed.
    pub past_deadline: bool,
}

/// The phase a look gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The canary is worse.
    Failed,
    /// Enough evidence that it is not.
    Successful,
    /// Deadline reached without enough evidence.
    Inconclusive,
    /// Keep looking.
    Continue,
}

/// The verdict of a look, with what it is based on.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The phase.
    pub phase: Phase,
    /// One sentence for people.
    pub sentence: String,
    /// Figures for the measurement's metadata: counts, rates, statistic, boundaries, confidence.
    pub details: Vec<(&'static str, String)>,
}

/// A share as a percentage, with one decimal below 10%.
pub fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p != 0.0 && p.abs() < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

fn fmt(x: f64) -> String {
    format!("{:.4}", x)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// Decides one look. Never decides on no data: without canary requests it continues (and is
/// Inconclusive at the deadline).
pub fn judge(settings: &Settings, look: &Look) -> Judgement {
    let mut sprt = settings.sprt;
    if settings.relative
        && let Some(b) = look.baseline
        && b.requests > 0
        && b.rate() > sprt.p0
    {
        let shift = b.rate() - sprt.p0;
        sprt.p0 = b.rate();
        sprt.p1 = (sprt.p1 + shift).min(0.999_999);
    }
    let c = look.canary;
    let test = sprt.evaluate(c.requests, c.errors);
    let confidence = percent(1.0 - sprt.alpha);
    let mut details = vec![
        ("canaryRequests", c.requests.to_string()),
        ("canaryErrors", c.errors.to_string()),
        ("canaryErrorRate", fmt(c.rate())),
    ];
    if let Some(b) = look.baseline {
        details.push(("baselineRequests", b.requests.to_string()));
        details.push(("baselineErrors", b.errors.to_string()));
        details.push(("baselineErrorRate", fmt(b.rate())));
    }
    details.extend([
        ("acceptableErrorRate", fmt(sprt.p0)),
        ("unacceptableErrorRate", fmt(sprt.p1)),
        ("logLikelihoodRatio", fmt(test.llr)),
        ("failBoundary", fmt(test.upper)),
        ("passBoundary", fmt(test.lower)),
        ("confidence", fmt(1.0 - sprt.alpha)),
    ]);
    let vs = match look.baseline {
        Some(b) => format!(" vs {} of {} on stable", percent(b.rate()), b.requests),
        None => String::new(),
    };
    let errors = format!(
        "canary errors {} of {} requests{vs}",
        percent(c.rate()),
        c.requests
    );
    // Latency: a one-sided U test at this look's share of alpha, with the effect floor.
    let mut latency_worse = None;
    let mut latency_tested = false;
    if let (Some(floor), Some((cb, bb))) = (settings.latency_floor, &look.latency)
        && let Some(l) = mann_whitney(cb, bb)
    {
        latency_tested = true;
        let level = latency_alpha(sprt.alpha, look.latency_look);
        details.extend([
            ("latencyCanaryRequests", l.canary.to_string()),
            ("latencyBaselineRequests", l.baseline.to_string()),
            ("latencyEffect", fmt(l.effect)),
            ("latencyZ", fmt(l.z)),
            ("latencyPValue", format!("{:.3e}", l.p_value)),
            ("latencyLevel", format!("{level:.3e}")),
        ]);
        if l.p_value < level && l.effect >= 0.5 + floor {
            latency_worse = Some(format!(
                "canary slower than stable in {} of request pairs ({} vs {} requests, p = {:.1e}): worse with {confidence} confidence",
                percent(l.effect),
                l.canary,
                l.baseline,
                l.p_value
            ));
        }
    }
    if test.decision == Decision::Worse {
        return Judgement {
            phase: Phase::Failed,
            sentence: format!("{errors}: worse with {confidence} confidence"),
            details,
        };
    }
    if let Some(s) = latency_worse {
        return Judgement {
            phase: Phase::Failed,
            sentence: s,
            details,
        };
    }
    let latency_ok = settings.latency_floor.is_none() || latency_tested;
    if test.decision == Decision::Acceptable && latency_ok {
        return Judgement {
            phase: Phase::Successful,
            sentence: format!(
                "{errors}: not worse than {} with {confidence} confidence",
                percent(sprt.p0)
            ),
            details,
        };
    }
    if look.past_deadline {
        let why = if c.requests == 0 {
            "no canary request was counted before the deadline".to_string()
        } else {
            format!("{errors}: not enough evidence either way before the deadline")
        };
        return Judgement {
            phase: Phase::Inconclusive,
            sentence: why,
            details,
        };
    }
    Judgement {
        phase: Phase::Continue,
        sentence: format!(
            "{errors}: undecided (statistic {} between {} and {})",
            fmt(test.llr),
            fmt(test.lower),
            fmt(test.upper)
        ),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_steps_match_the_hand_computation() {
        let t = Sprt {
            p0: 0.05,
            p1: 0.30,
            alpha: 0.01,
            beta: 0.01,
        };
        assert!((t.upper() - 99f64.ln()).abs() < 1e-12);
        assert!((t.lower() + 99f64.ln()).abs() < 1e-12);
        // ln 6 per failure: 3 failures are not enough (5.38 > 4.60 only without good ones).
        assert_eq!(t.min_requests_to_fail(), 3);
        assert_eq!(t.evaluate(3, 3).decision, Decision::Worse);
        assert_eq!(t.evaluate(10, 1).decision, Decision::Continue);
        assert_eq!(t.evaluate(100, 0).decision, Decision::Acceptable);
        // About 14 requests on average at 30% errors: the figure of the closed-loop scenario.
        let asn = t.expected_sample_number(0.30);
        assert!((13.0..16.0).contains(&asn), "{asn}");
        assert!(t.check().is_ok());
        assert!(Sprt { alpha: 0.0, ..t }.check().is_err());
        assert!(Sprt { alpha: 1.0, ..t }.check().is_err());
        assert!(Sprt { p1: 0.05, ..t }.check().is_err());
    }

    #[test]
    fn mann_whitney_sees_a_shift_and_not_a_copy() {
        let base = [
            (0.05, 90.0),
            (0.1, 99.0),
            (0.5, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let same = [
            (0.05, 18.0),
            (0.1, 20.0),
            (0.5, 20.0),
            (f64::INFINITY, 20.0),
        ];
        let r = mann_whitney(&same, &base).unwrap();
        assert!((r.effect - 0.5).abs() < 0.02, "{r:?}");
        assert!(r.p_value > 0.2, "{r:?}");
        let slow = [(0.05, 0.0), (0.1, 0.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        let r = mann_whitney(&slow, &base).unwrap();
        assert!(r.effect > 0.95, "{r:?}");
        assert!(r.p_value < 1e-6, "{r:?}");
        assert_eq!(r.canary, 20);
        assert_eq!(r.baseline, 100);
        assert_eq!(mann_whitney(&[], &base), None);
    }

    #[test]
    fn normal_tail_is_accurate() {
        assert!((normal_upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_upper_tail(-2.326_348) - 0.99).abs() < 1e-6);
    }
}

//! Replica arithmetic: how many pods each ReplicaSet should run.
//!
//! The basic canary (no traffic routing) follows Argo Rollouts' arithmetic exactly, because the
//! replica split *is* the traffic split there: the same manifest must run the same pods under
//! either controller (Argo's e2e scenarios `TestCanaryWithPausedRollout`,
//! `TestRolloutScalingDuringUpdate`, `TestRolloutBadToBadUpdate` pin the numbers).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::validation::resolve_int_or_percent;

/// Canary pods for a traffic weight: `ceil(replicas × weight / maxWeight)`, capped at `replicas`.
pub fn canary_replicas_for_weight(replicas: i32, weight: i32, max_weight: i32) -> i32 {
    if weight <= 0 || replicas <= 0 || max_weight <= 0 {
        return 0;
    }
    let scaled = i64::from(replicas) * i64::from(weight);
    let max = i64::from(max_weight);
    (((scaled + max - 1) / max) as i32).min(replicas)
}

/// Raises a non-zero count to `min_pods` (itself capped at `replicas`), for
/// `minPodsPerReplicaSet`.
pub fn apply_min_pods(count: i32, min_pods: Option<i32>, replicas: i32) -> i32 {
    match min_pods {
        Some(min) if count > 0 => count.max(min.min(replicas)),
        _ => count,
    }
}

/// The share of traffic (out of `max_weight`) that `available` pods can serve when
/// `full_size` pods serve all of it. Rounded down so the estimate never overstates capacity.
pub fn capacity_weight(available: i32, full_size: i32, max_weight: i32) -> i32 {
    if full_size <= 0 {
        return 0;
    }
    let cap = i64::from(available.max(0)) * i64::from(max_weight) / i64::from(full_size);
    (cap as i32).clamp(0, max_weight)
}

/// `maxSurge` and `maxUnavailable` resolved against `replicas`, as Argo resolves them for a
/// canary: both default to 25% (surge rounds up, unavailability down); when both come to 0
/// (rounding, e.g. 25% of 3 replicas unavailable with `maxSurge: 0`) one pod may be unavailable;
/// unavailability never exceeds `replicas` and is 0 without replicas. A value that does not
/// resolve (refused by validation before it gets here) counts as 0.
pub fn surge_and_unavailable(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let surge = resolve_int_or_percent(max_surge, replicas, true).unwrap_or(0);
    let mut unavailable = resolve_int_or_percent(max_unavailable, replicas, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let unavailable = if replicas == 0 {
        0
    } else {
        unavailable.min(replicas)
    };
    (surge, unavailable)
}

/// A ReplicaSet's counts, as the canary arithmetic sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// What the basic canary arithmetic works from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicCanary {
    /// `spec.replicas`.
    pub replicas: i32,
    /// The weight in force (0 during an abort, `max_weight` once the steps are done).
    pub weight: i32,
    /// 100 without traffic routing.
    pub max_weight: i32,
    /// Resolved `maxSurge`.
    pub max_surge: i32,
    /// Resolved `maxUnavailable`.
    pub max_unavailable: i32,
}

/// The canary and stable counts closest to `weight`, possibly one pod above `replicas` when a
/// surge is allowed. With a weight strictly between 0 and the maximum, neither side gets 0 pods
/// (so one replica runs one canary pod beside its stable pod, rather than being replaced at
/// once); a tie between rounding down and up goes to the larger canary.
pub fn weighted_split(replicas: i32, weight: i32, max_weight: i32, max_surge: i32) -> (i32, i32) {
    if replicas <= 0 || max_weight <= 0 {
        return (0, replicas.max(0));
    }
    let (r, w, m) = (
        i64::from(replicas),
        i64::from(weight.clamp(0, max_weight)),
        i64::from(max_weight),
    );
    let ceil = (r * w + m - 1) / m;
    let floor = r * w / m;
    // `total × weight / max` has a fractional part of exactly one half.
    let tied = |total: i64| 2 * ((total * w) % m) == m;
    let zero_allowed = w == m || w == 0 || (r == 1 && max_surge == 0);
    let mut options: Vec<(i64, i64)> = Vec::new();
    if ceil < r || zero_allowed {
        options.push((ceil, r));
    }
    if !tied(r) && (floor != 0 || zero_allowed) {
        options.push((floor, r));
    }
    if max_surge > 0 {
        options.push((ceil, r + 1));
        if !tied(r + 1) && (floor != 0 || zero_allowed) {
            options.push((floor, r + 1));
        }
    }
    // Distance from the weight, as a fraction `num / total` (compared exactly).
    let delta = |(canary, total): (i64, i64)| ((canary * m - w * total).abs(), total);
    let mut best = match options.first() {
        Some(first) => *first,
        None => return (0, replicas),
    };
    for option in options.iter().skip(1) {
        let (n1, d1) = delta(*option);
        let (n0, d0) = delta(best);
        if n1 * d0 < n0 * d1 {
            best = *option;
        }
    }
    (best.0 as i32, (best.1 - best.0) as i32)
}

/// Pods of a ReplicaSet that may count towards a scale-down. Pods not yet available count only
/// when `ignore_availability` (so a crash-looping side can still be scaled down to make room);
/// pods above `spec.replicas` never count, they are already going.
fn countable_for_scale_down(rs: Option<Counts>, ignore_availability: bool) -> i32 {
    let Some(rs) = rs else { return 0 };
    if rs.replicas < rs.available || ignore_availability {
        rs.replicas
    } else {
        rs.available
    }
}

/// Scales the draining side down towards `desired` by at most `scale_down`.
fn drain_towards(rs: Option<Counts>, desired: i32, scale_down: i32, count: i32) -> i32 {
    match rs {
        Some(rs) if rs.replicas > desired => desired.max(rs.replicas - scale_down),
        _ => count,
    }
}

/// Brings the pair back within the surge and the minimum availability: the adjusted side gives
/// back what exceeds the surge, but keeps pods that are needed to stay available; the draining
/// side then gives back whatever still exceeds the surge.
fn within_limits(
    drain: Option<Counts>,
    adjust: Option<Counts>,
    mut drain_count: i32,
    mut adjust_count: i32,
    max_total: i32,
    min_available: i32,
) -> (i32, i32) {
    let mut over = (adjust_count + drain_count - max_total).max(0);
    let mut available = drain.map_or(0, |d| d.available.min(drain_count));
    if let Some(adjust) = adjust {
        adjust_count -= over;
        available += adjust.available.min(adjust_count);
        let lost = (adjust.available - adjust_count).max(0);
        let missing = (min_available - available).max(0);
        adjust_count += lost.min(missing);
        over = (adjust_count + drain_count - max_total).max(0);
        drain_count -= over;
    }
    (drain_count, adjust_count)
}

/// The basic canary's next counts `(canary, stable)`, one move of a rolling update towards the
/// split for the weight: scale-ups within `replicas + maxSurge` (the stable first), then, once
/// no older ReplicaSet has pods, scale-downs that keep `replicas - maxUnavailable` pods
/// available. `stable` is None when there is no stable ReplicaSet distinct from the canary (the
/// canary then heads for all the replicas); `others` is the sum of `spec.replicas` of every
/// other ReplicaSet.
pub fn basic_canary_counts(
    p: &BasicCanary,
    canary: Option<Counts>,
    stable: Option<Counts>,
    others: i32,
) -> (i32, i32) {
    let (mut want_canary, mut want_stable) =
        weighted_split(p.replicas, p.weight, p.max_weight, p.max_surge);
    let canary_now = canary.map_or(0, |c| c.replicas);
    let mut canary_count = canary_now;
    let mut stable_count = 0;
    match stable {
        Some(s) => stable_count = s.replicas,
        None => {
            want_canary = p.replicas;
            want_stable = 0;
        }
    }
    let max_total = p.replicas + p.max_surge;
    let total = others + canary_now + stable.map_or(0, |s| s.replicas);
    let mut scale_up = max_total - total;
    if let Some(s) = stable
        && s.replicas < want_stable
        && scale_up > 0
    {
        if s.replicas + scale_up < want_stable {
            stable_count = s.replicas + scale_up;
            scale_up = 0;
        } else {
            stable_count = want_stable;
            scale_up -= want_stable - s.replicas;
        }
    }
    if canary_now < want_canary && scale_up > 0 {
        canary_count = want_canary.min(canary_now + scale_up);
    }
    if others > 0 {
        // Older ReplicaSets are scaled down first.
        return (canary_count, stable_count);
    }
    let min_available = p.replicas - p.max_unavailable;
    // Growing the canary: the stable's unavailable pods may go; shrinking it (an abort, a lower
    // weight): the canary's may.
    let increasing = want_canary >= canary_now;
    let countable = countable_for_scale_down(canary, !increasing)
        + countable_for_scale_down(stable, increasing);
    if countable <= min_available {
        return (canary_count, stable_count);
    }
    let scale_down = countable - min_available;
    if !increasing {
        canary_count = drain_towards(canary, want_canary, scale_down, canary_count);
        (canary_count, stable_count) = within_limits(
            canary,
            stable,
            canary_count,
            stable_count,
            max_total,
            min_available,
        );
    } else if stable.is_some() {
        stable_count = drain_towards(stable, want_stable, scale_down, stable_count);
        (stable_count, canary_count) = within_limits(
            stable,
            canary,
            stable_count,
            canary_count,
            max_total,
            min_available,
        );
    }
    (canary_count, stable_count)
}

/// The basic canary's step is done: the counts for the weight are reached (the arithmetic
/// proposes no further move), every canary pod is available, every stable pod exists, and no
/// older ReplicaSet has an available pod (they would serve traffic).
pub fn basic_canary_at_target(
    p: &BasicCanary,
    canary: Option<(Counts, i32)>,
    stable: Option<(Counts, i32)>,
    others: i32,
    others_available: i32,
) -> bool {
    let (want_canary, want_stable) =
        basic_canary_counts(p, canary.map(|c| c.0), stable.map(|s| s.0), others);
    let canary_ok =
        canary.is_some_and(|(c, _)| c.replicas == want_canary && c.available == want_canary);
    let stable_ok = match stable {
        Some((s, actual)) => s.replicas == want_stable && actual == want_stable,
        None => true,
    };
    canary_ok && stable_ok && others_available == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_replicas_round_up() {
        assert_eq!(canary_replicas_for_weight(10, 25, 100), 3);
        assert_eq!(canary_replicas_for_weight(3, 10, 100), 1);
        assert_eq!(canary_replicas_for_weight(4, 100, 100), 4);
        assert_eq!(canary_replicas_for_weight(4, 0, 100), 0);
        assert_eq!(canary_replicas_for_weight(10, 50, 200), 3);
    }

    #[test]
    fn min_pods_raises_only_non_zero_counts() {
        assert_eq!(apply_min_pods(1, Some(2), 5), 2);
        assert_eq!(apply_min_pods(0, Some(2), 5), 0);
        assert_eq!(apply_min_pods(1, Some(9), 5), 5);
    }

    #[test]
    fn capacity_rounds_down() {
        assert_eq!(capacity_weight(1, 3, 100), 33);
        assert_eq!(capacity_weight(0, 3, 100), 0);
        assert_eq!(capacity_weight(3, 3, 100), 100);
    }

    #[test]
    fn surge_and_unavailable_default_to_a_quarter() {
        assert_eq!(surge_and_unavailable(None, None, 3), (1, 0));
        assert_eq!(surge_and_unavailable(None, None, 4), (1, 1));
        assert_eq!(surge_and_unavailable(None, None, 1), (1, 0));
        let zero = IntOrString::Int(0);
        assert_eq!(surge_and_unavailable(Some(&zero), None, 3), (0, 1));
        assert_eq!(
            surge_and_unavailable(None, Some(&IntOrString::Int(9)), 4),
            (1, 4)
        );
    }

    #[test]
    fn weighted_split_picks_the_closest_counts() {
        // Argo's documented examples and e2e numbers.
        assert_eq!(weighted_split(3, 20, 100, 1), (1, 3));
        assert_eq!(weighted_split(1, 5, 100, 1), (1, 1));
        assert_eq!(weighted_split(1, 95, 100, 1), (1, 1));
        assert_eq!(weighted_split(1, 50, 100, 0), (1, 0));
        assert_eq!(weighted_split(4, 50, 100, 1), (2, 2));
        assert_eq!(weighted_split(8, 25, 100, 2), (2, 6));
        assert_eq!(weighted_split(2, 25, 100, 1), (1, 2));
        assert_eq!(weighted_split(10, 10, 100, 1), (1, 9));
        assert_eq!(weighted_split(4, 100, 100, 1), (4, 0));
        assert_eq!(weighted_split(4, 0, 100, 1), (0, 4));
        assert_eq!(weighted_split(0, 50, 100, 1), (0, 0));
        assert_eq!(weighted_split(2, 99, 100, 1), (2, 1));
        assert_eq!(weighted_split(3, 50, 100, 0), (2, 1));
        assert_eq!(weighted_split(3, 49, 100, 1), (2, 2));
        assert_eq!(weighted_split(10, 15, 100, 0), (2, 8));
        assert_eq!(weighted_split(10, 99, 100, 0), (9, 1));
        assert_eq!(weighted_split(10, 1, 100, 1), (1, 10));
        assert_eq!(weighted_split(10, 24, 100, 1), (3, 8));
        assert_eq!(weighted_split(10, 99, 100, 1), (10, 1));
    }

    fn at(replicas: i32, available: i32) -> Counts {
        Counts {
            replicas,
            available,
        }
    }

    fn p(replicas: i32, weight: i32, surge: i32, unavailable: i32) -> BasicCanary {
        BasicCanary {
            replicas,
            weight,
            max_weight: 100,
            max_surge: surge,
            max_unavailable: unavailable,
        }
    }

    #[test]
    fn basic_counts_follow_argos_examples() {
        let c = |pp, canary, stable| basic_canary_counts(&pp, Some(canary), Some(stable), 0);
        assert_eq!(c(p(10, 10, 1, 1), at(0, 0), at(10, 10)), (1, 9));
        assert_eq!(c(p(10, 30, 3, 0), at(0, 0), at(10, 10)), (3, 10));
        assert_eq!(c(p(10, 30, 0, 5), at(0, 0), at(10, 10)), (0, 7));
        // Never past the surge with a weight that does not divide evenly.
        assert_eq!(c(p(10, 5, 0, 1), at(0, 0), at(10, 10)), (0, 9));
        assert_eq!(c(p(10, 5, 0, 1), at(0, 0), at(9, 9)), (1, 9));
        assert_eq!(c(p(1, 5, 1, 0), at(0, 0), at(1, 1)), (1, 1));
        assert_eq!(c(p(1, 95, 1, 0), at(0, 0), at(1, 1)), (1, 1));
    }

    #[test]
    fn an_unavailable_stable_is_not_scaled_down_while_the_canary_is_unavailable() {
        // TestRolloutBadToBadUpdate: 4 replicas, surge 1, no unavailability, neither side ready.
        let pp = p(4, 100, 1, 0);
        assert_eq!(
            basic_canary_counts(&pp, Some(at(0, 0)), Some(at(4, 0)), 0),
            (1, 4)
        );
        assert_eq!(
            basic_canary_counts(&pp, Some(at(1, 0)), Some(at(4, 0)), 0),
            (1, 4)
        );
    }

    #[test]
    fn scaling_down_mid_update_shrinks_the_unavailable_canary() {
        // TestRolloutScalingDuringUpdate: 4 → 8 → 4 replicas, surge 2, canary never ready.
        assert_eq!(
            basic_canary_counts(&p(4, 100, 2, 0), Some(at(0, 0)), Some(at(4, 4)), 0),
            (2, 4)
        );
        assert_eq!(
            basic_canary_counts(&p(8, 100, 2, 0), Some(at(2, 0)), Some(at(4, 4)), 0),
            (6, 4)
        );
        assert_eq!(
            basic_canary_counts(&p(4, 100, 2, 0), Some(at(6, 0)), Some(at(4, 4)), 0),
            (2, 4)
        );
    }

    #[test]
    fn older_replica_sets_go_first() {
        let pp = p(3, 20, 1, 0);
        assert_eq!(
            basic_canary_counts(&pp, Some(at(0, 0)), Some(at(3, 3)), 1),
            (0, 3)
        );
        assert_eq!(
            basic_canary_counts(&pp, Some(at(0, 0)), Some(at(3, 3)), 0),
            (1, 3)
        );
    }

    #[test]
    fn without_a_stable_the_canary_heads_for_all_replicas() {
        assert_eq!(
            basic_canary_counts(&p(4, 20, 1, 1), Some(at(0, 0)), None, 0),
            (4, 0)
        );
    }
}

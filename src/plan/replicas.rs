//! Replica arithmetic: how many pods each ReplicaSet should run.

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

/// Basic canary split for a weight: canary `ceil(replicas × weight / 100)`, stable the rest.
pub fn basic_targets(replicas: i32, weight: i32) -> (i32, i32) {
    let new = canary_replicas_for_weight(replicas, weight, 100);
    (new, replicas - new)
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

/// One ReplicaSet as the rolling-update arithmetic sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Current `spec.replicas`.
    pub current: i32,
    /// Available pods.
    pub available: i32,
    /// Where this ReplicaSet should end up.
    pub target: i32,
}

/// Moves ReplicaSets towards their targets the way a Deployment's rolling update does: total
/// pods stay within `replicas + max_surge`, available pods never drop below
/// `replicas - max_unavailable` because of a scale-down. Pools are given in scale-down priority
/// order (first is scaled down first). Returns the new desired count of each pool.
pub fn rolling_step(
    pools: &[Pool],
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
) -> Vec<i32> {
    let mut desired: Vec<i32> = pools.iter().map(|p| p.current).collect();
    // Scale-ups first, bounded by the surge allowance.
    let total: i32 = desired.iter().sum();
    let mut room = (replicas + max_surge - total).max(0);
    for (i, p) in pools.iter().enumerate() {
        if p.target > desired[i] {
            let grant = (p.target - desired[i]).min(room);
            desired[i] += grant;
            room -= grant;
        }
    }
    // Scale-downs: pods that are not available can always go; available ones only while enough
    // remain available.
    let total_available: i32 = pools.iter().map(|p| p.available.min(p.current)).sum();
    let min_available = (replicas - max_unavailable).max(0);
    let mut removable_available = (total_available - min_available).max(0);
    for (i, p) in pools.iter().enumerate() {
        if p.target < desired[i] {
            let want = desired[i] - p.target;
            let unavailable = (p.current - p.available).max(0);
            let free = want.min(unavailable);
            let from_available = (want - free).min(removable_available);
            removable_available -= from_available;
            desired[i] -= free + from_available;
        }
    }
    desired
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
    fn rolling_step_respects_surge_then_unavailability() {
        // 4 replicas, 25% surge (1) and 25% unavailable (1): stable 4 → 0, new 0 → 4.
        let pools = [
            Pool {
                current: 4,
                available: 4,
                target: 0,
            },
            Pool {
                current: 0,
                available: 0,
                target: 4,
            },
        ];
        assert_eq!(rolling_step(&pools, 4, 1, 1), vec![3, 1]);
    }

    #[test]
    fn unavailable_pods_are_removed_first_and_freely() {
        let pools = [
            Pool {
                current: 4,
                available: 2,
                target: 0,
            },
            Pool {
                current: 4,
                available: 4,
                target: 4,
            },
        ];
        // Two unavailable pods go at once; 6 available - min 3 = 3 more may go, capped by want.
        assert_eq!(rolling_step(&pools, 4, 1, 1), vec![0, 4]);
    }
}

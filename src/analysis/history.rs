//! Which finished AnalysisRuns of a Rollout to delete, as Argo Rollouts prunes them
//! (`spec.analysis.successfulRunHistoryLimit` / `unsuccessfulRunHistoryLimit`, 5 and 5 by
//! default). Pure: the controller lists the runs and ReplicaSets and deletes what this returns.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::api::common::AnalysisPhase;
use crate::api::rollout::AnalysisRunStrategy;

/// Successful runs kept when `successfulRunHistoryLimit` is omitted (Argo's default).
pub const DEFAULT_SUCCESSFUL_RUN_HISTORY_LIMIT: i32 = 5;
/// Failed, Error and Inconclusive runs kept when `unsuccessfulRunHistoryLimit` is omitted.
pub const DEFAULT_UNSUCCESSFUL_RUN_HISTORY_LIMIT: i32 = 5;

/// What pruning needs to know about one run of the Rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// The run's name.
    pub name: String,
    /// When it was created (newest are kept first).
    pub created: Option<Timestamp>,
    /// Its pod-template-hash label.
    pub pod_hash: Option<String>,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// The Rollout's status names it as a current run: never pruned.
    pub current: bool,
}

/// The limits of a Rollout's `spec.analysis`, defaults applied (negative counts as 0).
pub fn limits(strategy: Option<&AnalysisRunStrategy>) -> (usize, usize) {
    let pick = |v: Option<i32>, default: i32| usize::try_from(v.unwrap_or(default)).unwrap_or(0);
    (
        pick(
            strategy.and_then(|s| s.successful_run_history_limit),
            DEFAULT_SUCCESSFUL_RUN_HISTORY_LIMIT,
        ),
        pick(
            strategy.and_then(|s| s.unsuccessful_run_history_limit),
            DEFAULT_UNSUCCESSFUL_RUN_HISTORY_LIMIT,
        ),
    )
}

/// The runs to delete, newest first, with Argo's rules: a run that is not current and whose
/// revision's ReplicaSet is gone (or being deleted, or that has no pod-template hash) goes;
/// otherwise the newest `successful` Successful runs and the newest `unsuccessful` Failed, Error
/// or Inconclusive runs stay, and older ones go. Runs still measuring always stay (Argo deletes
/// one whose revision is gone; here the Rollout's termination completes it first).
/// `replica_sets` maps each ReplicaSet's pod-template hash to whether it is being deleted.
pub fn runs_to_delete(
    runs: &[RunView],
    replica_sets: &BTreeMap<String, bool>,
    successful: usize,
    unsuccessful: usize,
) -> Vec<String> {
    let mut candidates: Vec<&RunView> = runs.iter().filter(|r| !r.current).collect();
    // Newest first; the name breaks ties (runs created in the same second).
    candidates.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    let (mut kept_ok, mut kept_bad) = (0, 0);
    let mut out = Vec::new();
    for r in candidates {
        // A run still measuring is never deleted, even for a revision that is gone: the Rollout
        // terminates it first (and a run created a moment ago may name a ReplicaSet the caller's
        // cache has not seen yet).
        if !r.phase.is_completed() {
            continue;
        }
        let revision_gone = match r.pod_hash.as_deref().map(|h| replica_sets.get(h)) {
            None | Some(None) | Some(Some(true)) => true,
            Some(Some(false)) => false,
        };
        if revision_gone {
            out.push(r.name.clone());
            continue;
        }
        match r.phase {
            AnalysisPhase::Successful => {
                if kept_ok < successful {
                    kept_ok += 1;
                } else {
                    out.push(r.name.clone());
                }
            }
            AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive => {
                if kept_bad < unsuccessful {
                    kept_bad += 1;
                } else {
                    out.push(r.name.clone());
                }
            }
            AnalysisPhase::Pending | AnalysisPhase::Running => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, secs: i64, hash: &str, phase: AnalysisPhase) -> RunView {
        RunView {
            name: name.into(),
            created: Timestamp::from_second(1_800_000_000 + secs).ok(),
            pod_hash: Some(hash.into()),
            phase,
            current: false,
        }
    }

    #[test]
    fn the_newest_of_each_kind_are_kept() {
        use AnalysisPhase::*;
        let rs = BTreeMap::from([("a".to_string(), false)]);
        let runs = vec![
            run("s1", 1, "a", Successful),
            run("s2", 2, "a", Successful),
            run("s3", 3, "a", Successful),
            run("f1", 4, "a", Failed),
            run("e1", 5, "a", Error),
            run("i1", 6, "a", Inconclusive),
            run("r1", 0, "a", Running),
        ];
        assert_eq!(runs_to_delete(&runs, &rs, 2, 1), ["e1", "f1", "s1"]);
        assert!(runs_to_delete(&runs, &rs, 5, 5).is_empty());
        assert_eq!(
            runs_to_delete(&runs, &rs, 0, 0),
            ["i1", "e1", "f1", "s3", "s2", "s1"]
        );
    }

    #[test]
    fn runs_of_a_revision_that_is_gone_go_and_current_runs_stay() {
        use AnalysisPhase::*;
        let rs = BTreeMap::from([("a".to_string(), false), ("b".to_string(), true)]);
        let mut current = run("cur", 9, "gone", Running);
        current.current = true;
        let mut unlabelled = run("nolabel", 1, "a", Successful);
        unlabelled.pod_hash = None;
        let runs = vec![
            run("old", 1, "gone", Failed),
            run("measuring", 3, "gone", Running),
            run("deleting", 2, "b", Successful),
            unlabelled,
            current,
        ];
        assert_eq!(
            runs_to_delete(&runs, &rs, 5, 5),
            ["deleting", "old", "nolabel"]
        );
    }

    #[test]
    fn limits_default_to_five_and_five() {
        assert_eq!(limits(None), (5, 5));
        let s = AnalysisRunStrategy {
            successful_run_history_limit: Some(1),
            unsuccessful_run_history_limit: Some(-3),
        };
        assert_eq!(limits(Some(&s)), (1, 0));
    }
}

//! `strategy.{blueGreen,canary}.antiAffinity`: the new version's ReplicaSet carries a pod
//! anti-affinity term against the stable ReplicaSet's pods (Argo Rollouts' semantics), next to
//! the template's own affinity.

use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector};
use sluice::api::constants::POD_TEMPLATE_HASH_LABEL;
use sluice::api::rollout::{Rollout, RolloutStatus};
use sluice::plan::anti_affinity::{TOPOLOGY_KEY, replica_set_affinity};
use sluice_test_support::argo::{replica_set_of_revision, revision_hash};
use sluice_test_support::controller::Env;
use sluice_test_support::rollout::{blue_green, canary, phase_is};

const PREFERRED: &str =
    "antiAffinity:\n  preferredDuringSchedulingIgnoredDuringExecution: {weight: 42}\n";
const REQUIRED: &str = "antiAffinity:\n  requiredDuringSchedulingIgnoredDuringExecution: {}\n";

fn with_stable(mut ro: Rollout, stable: &str) -> Rollout {
    ro.metadata.namespace = Some("team".into());
    ro.status = Some(RolloutStatus {
        stable_rs: Some(stable.into()),
        ..Default::default()
    });
    ro
}

/// The stable hash the single anti-affinity term selects, its namespaces and topology key.
fn term_of(a: &Affinity, preferred: bool) -> (Option<i32>, Vec<String>, Vec<String>, String) {
    let anti = a.pod_anti_affinity.as_ref().expect("pod anti-affinity");
    let (weight, term) = if preferred {
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let terms = anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("preferred terms");
        assert_eq!(terms.len(), 1, "{terms:?}");
        (Some(terms[0].weight), terms[0].pod_affinity_term.clone())
    } else {
        assert!(
            anti.preferred_during_scheduling_ignored_during_execution
                .is_none()
        );
        let terms = anti
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("required terms");
        assert_eq!(terms.len(), 1, "{terms:?}");
        (None, terms[0].clone())
    };
    let exprs = term
        .label_selector
        .and_then(|s| s.match_expressions)
        .unwrap_or_default();
    assert_eq!(exprs.len(), 1, "{exprs:?}");
    assert_eq!(exprs[0].key, POD_TEMPLATE_HASH_LABEL);
    assert_eq!(exprs[0].operator, "In");
    (
        weight,
        exprs[0].values.clone().unwrap_or_default(),
        term.namespaces.unwrap_or_default(),
        term.topology_key,
    )
}

#[test]
fn preferred_blue_green_term_names_the_stable_hash() {
    let ro = with_stable(
        blue_green(&format!("activeService: a\n{PREFERRED}")).build(),
        "old",
    );
    let a = replica_set_affinity(&ro, None, "new").expect("an affinity");
    assert_eq!(
        term_of(&a, true),
        (
            Some(42),
            vec!["old".to_string()],
            vec!["team".to_string()],
            TOPOLOGY_KEY.to_string()
        )
    );
}

#[test]
fn required_canary_term_keeps_the_template_affinity() {
    let ro = with_stable(canary(REQUIRED).build(), "old");
    let own = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![Default::default()],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = replica_set_affinity(&ro, Some(&own), "new").expect("an affinity");
    assert_eq!(
        a.node_affinity, own.node_affinity,
        "the template's own part"
    );
    assert_eq!(term_of(&a, false).1, vec!["old".to_string()]);
}

#[test]
fn nothing_to_avoid_leaves_the_template_affinity_alone() {
    let own = Affinity {
        node_affinity: Some(NodeAffinity::default()),
        ..Default::default()
    };
    // The first version: no stable ReplicaSet yet.
    let first = blue_green(&format!("activeService: a\n{PREFERRED}")).build();
    assert_eq!(replica_set_affinity(&first, None, "new"), None);
    assert_eq!(
        replica_set_affinity(&first, Some(&own), "new"),
        Some(own.clone())
    );
    // Back to the stable version itself.
    let back = with_stable(first.clone(), "new");
    assert_eq!(replica_set_affinity(&back, None, "new"), None);
    // No antiAffinity, or an empty one.
    let plain = with_stable(blue_green("activeService: a\n").build(), "old");
    assert_eq!(replica_set_affinity(&plain, None, "new"), None);
    let empty = with_stable(
        blue_green("activeService: a\nantiAffinity: {}\n").build(),
        "old",
    );
    assert_eq!(replica_set_affinity(&empty, None, "new"), None);
}

async fn second_revision_affinity(name: &str, strategy: String) -> (Option<Affinity>, String) {
    let env = Env::new().await;
    let ro = if strategy.starts_with("activeService") {
        env.services(&[name]).await;
        blue_green(&strategy).name(name).replicas(2).build()
    } else {
        canary(&strategy).name(name).replicas(2).build()
    };
    env.create(&ro).await;
    env.wait_for(name, "Healthy", 60, phase_is("Healthy")).await;
    let v1 = revision_hash(&env, "1").await;
    let first = replica_set_of_revision(&env, "1").await;
    assert_eq!(
        first
            .spec
            .and_then(|s| s.template)
            .and_then(|t| t.spec)
            .and_then(|s| s.affinity),
        None,
        "the first version has nothing to stay away from"
    );
    env.set_image(name, "web:2").await;
    let second = replica_set_of_revision(&env, "2").await;
    (
        second
            .spec
            .and_then(|s| s.template)
            .and_then(|t| t.spec)
            .and_then(|s| s.affinity),
        v1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_preview_replica_set_avoids_the_active_pods() {
    let (affinity, v1) = second_revision_affinity(
        "bg-affinity",
        format!("activeService: bg-affinity\nautoPromotionEnabled: false\n{PREFERRED}"),
    )
    .await;
    let (weight, values, namespaces, topology) = term_of(&affinity.expect("affinity"), true);
    assert_eq!(weight, Some(42));
    assert_eq!(values, vec![v1]);
    assert_eq!(namespaces.len(), 1);
    assert_eq!(topology, TOPOLOGY_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_replica_set_requires_other_nodes_than_the_stable_pods() {
    let (affinity, v1) = second_revision_affinity(
        "canary-affinity",
        format!("steps: [{{setWeight: 50}}, {{pause: {{}}}}]\n{REQUIRED}"),
    )
    .await;
    let (weight, values, _, topology) = term_of(&affinity.expect("affinity"), false);
    assert_eq!(weight, None);
    assert_eq!(values, vec![v1]);
    assert_eq!(topology, TOPOLOGY_KEY);
}

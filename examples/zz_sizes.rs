use std::mem::size_of;
fn main() {
    use k8s_openapi::api::apps::v1::*;
    use k8s_openapi::api::core::v1::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use sluice::api::rollout::*;
    println!("Rollout {}", size_of::<Rollout>());
    println!("RolloutSpec {}", size_of::<RolloutSpec>());
    println!("RolloutStatus {}", size_of::<RolloutStatus>());
    println!("PodTemplateSpec {}", size_of::<PodTemplateSpec>());
    println!("PodSpec {}", size_of::<PodSpec>());
    println!("Container {}", size_of::<Container>());
    println!("ObjectMeta {}", size_of::<ObjectMeta>());
    println!("ReplicaSet {}", size_of::<ReplicaSet>());
    println!("ReplicaSetSpec {}", size_of::<ReplicaSetSpec>());
    println!("ReplicaSetStatus {}", size_of::<ReplicaSetStatus>());
    println!("Service {}", size_of::<Service>());
}

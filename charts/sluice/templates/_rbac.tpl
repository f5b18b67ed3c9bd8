{{- /* Rules on namespaced objects: granted cluster-wide (ClusterRole) by default, or in
       watchNamespace only (Role). The controller never writes a Rollout's spec, and touches
       Pods only to restart them (spec.restartAt: listed, then evicted) and to put a Rollout's
       ephemeral labels and annotations on them (patched); never deleted. */}}
{{- define "sluice.namespacedRules" -}}
# Rollouts: watched and reconciled. patch is for metadata only: the traffic-cleanup finalizer
# of routed Rollouts (so routes go back to stable before a Rollout is deleted) and the
# notification outbox annotations (notifications.sluice.dev/pending and /delivered); the spec is
# never written (Git owns it).
- apiGroups: [sluice.dev]
  resources: [rollouts]
  verbs: [get, list, watch, patch]
# Status: phase, steps, weights, conditions.
- apiGroups: [sluice.dev]
  resources: [rollouts/status]
  verbs: [update, patch]
# Children carry an ownerReference with blockOwnerDeletion to their Rollout; clusters running the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: [sluice.dev]
  resources: [rollouts/finalizers]
  verbs: [update]
# AnalysisRuns: created per analysis step, measured, terminated (patch) and garbage-collected.
- apiGroups: [sluice.dev]
  resources: [analysisruns]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [sluice.dev]
  resources: [analysisruns/status]
  verbs: [update]
# AnalysisTemplates: read to check an update's analyses and build AnalysisRuns; watched so
# that creating or fixing one resumes the Rollouts it held back.
- apiGroups: [sluice.dev]
  resources: [analysistemplates]
  verbs: [get, list, watch]
# ReplicaSets: one per Rollout revision, created, scaled (patch) and pruned.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [create, get, list, watch, patch, delete]
# Jobs: each measurement of a job metric is a Job, owned by its AnalysisRun: created, read and
# watched until it completes or fails, and deleted (foreground, so its pods go too) when the run
# stops first. Its pods are never touched directly.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# Pods: listed only while a Rollout's restart (spec.restartAt) is due, to find the pods created
# before it, or while a ReplicaSet's ephemeral metadata (canaryMetadata / stableMetadata) is out
# of date; patched only then, in their labels and annotations, so that pods switch role without
# being replaced. Never watched, got, updated or deleted.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
# Pods are restarted through the Eviction API, so PodDisruptionBudgets apply.
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
# Deployments: read for workloadRef templates; patched only to scale a referenced Deployment down.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
# Services: the pod-template hash key of the canary and stable Service selectors.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, patch]
# Ingresses: the stable Ingress is read; the canary Ingress is created, updated and deleted.
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
{{- if .Values.rbac.istio }}
# Istio: route weights of VirtualServices and subset labels of DestinationRules.
- apiGroups: [networking.istio.io]
  resources: [virtualservices, destinationrules]
  verbs: [get, list, watch, patch]
{{- end }}
{{- if .Values.rbac.gatewayAPI }}
# Gateway API: routes are read and watched (their weights are checked and drift is corrected),
# and patched only in the stable and canary backendRefs' weights and Sluice's own header and
# mirror rules; never created, updated or deleted.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes, grpcroutes, tcproutes, tlsroutes]
  verbs: [get, list, watch, patch]
# ReferenceGrants: read only, to tell a route in another namespace that lacks one; creating one
# is the user's decision, never Sluice's.
- apiGroups: [gateway.networking.k8s.io]
  resources: [referencegrants]
  verbs: [get, list, watch]
{{- end }}
{{- if .Values.rbac.secrets }}
# Secrets: get only, by name, for analysis args with valueFrom.secretKeyRef (never listed).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
# Events: every transition is recorded as an Event on the Rollout or AnalysisRun.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

//! Generation of the CRD manifests under `crds/`.

//! Cluster access for the CLI: kubeconfig, context and namespace as kubectl picks them, and
//! API errors turned into one line a person can act on.

use std::fmt;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::KubeArgs;

/// A connected client plus where it points, for messages.
#[derive(Clone)]
pub struct Target {
    /// The client.
    pub client: Client,
    /// Namespace from `-n`, else the context's, else `default`.
    pub namespace: String,
    /// The API server URL (for "cannot reach" messages).
    pub server: String,
}

/// Why a CLI command failed, in one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The object does not exist.
    #[error("{kind} \"{name}\" not found in namespace \"{namespace}\"")]
    NotFound {
        /// Kind, lower case (`rollout`).
        kind: String,
        /// Object name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// RBAC denied the request.
    #[error(
        "forbidden: not allowed to {verb} {resource} in namespace \"{namespace}\" \
         (ask for RBAC verb \"{verb}\" on resource \"{resource}\" in API group \"{group}\"): {message}"
    )]
    Forbidden {
        /// The RBAC verb (`get`, `list`, `patch`, `watch`).
        verb: String,
        /// The resource, with subresource (`rollouts/status`).
        resource: String,
        /// API group (`sluice.dev`; empty for core).
        group: String,
        /// Namespace.
        namespace: String,
        /// The server's message.
        message: String,
    },
    /// The API server cannot be reached.
    #[error("cannot reach the cluster at {server}: {cause}")]
    Unreachable {
        /// Server URL.
        server: String,
        /// Underlying error.
        cause: String,
    },
    /// The `sluice.dev` API is not served.
    #[error(
        "Sluice's CRDs are not installed on the cluster at {server} (no {resource}.sluice.dev); \
         install them with `sluice crds | kubectl apply --server-side -f -`"
    )]
    CrdsMissing {
        /// Server URL.
        server: String,
        /// Plural resource that was missing.
        resource: String,
    },
    /// The kubeconfig could not be used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// Any other API error.
    #[error("{verb} {resource} \"{name}\": {message}")]
    Api {
        /// Verb.
        verb: String,
        /// Resource.
        resource: String,
        /// Object name.
        name: String,
        /// The server's message.
        message: String,
    },
    /// The action does not make sense for the rollout's current state.
    #[error("{0}")]
    Refused(String),
}

/// What a request was doing, to name it in an error.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// RBAC verb.
    pub verb: &'a str,
    /// Resource (plural, with `/subresource` when there is one).
    pub resource: &'a str,
    /// API group.
    pub group: &'a str,
    /// Object name (empty for list).
    pub name: &'a str,
}

impl<'a> Op<'a> {
    /// A request on Sluice's API group.
    pub fn sluice(verb: &'a str, resource: &'a str, name: &'a str) -> Self {
        Op {
            verb,
            resource,
            group: "sluice.dev",
            name,
        }
    }
    /// A request on the `apps` group.
    pub fn apps(verb: &'a str, resource: &'a str, name: &'a str) -> Self {
        Op {
            verb,
            resource,
            group: "apps",
            name,
        }
    }
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// Builds the client the way kubectl would: `--kubeconfig`, else `$KUBECONFIG`, else
/// `~/.kube/config`, else the in-cluster service account; `--context` or the current context.
pub async fn connect(args: &KubeArgs) -> Result<Target, CliError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: None,
        user: None,
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| CliError::Config(e.to_string()))?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
        None => Config::infer()
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
    };
    let server = config.cluster_url.to_string();
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = crate::kube_client::client(config, &crate::kube_client::cli_user_agent(), None)
        .map_err(|e| CliError::Config(e.to_string()))?;
    Ok(Target {
        client,
        namespace,
        server,
    })
}

impl Target {
    /// Turns a kube error into one readable line. A 404 on the object is "not found" unless the
    /// whole `sluice.dev` API is missing, in which case the CRDs are not installed.
    pub async fn error(&self, op: Op<'_>, err: kube::Error) -> CliError {
        let kind = op
            .resource
            .split('/')
            .next()
            .unwrap_or(op.resource)
            .trim_end_matches('s')
            .to_string();
        match err {
            kube::Error::Api(status) => match status.code {
                404 => {
                    if op.group == "sluice.dev" && !self.sluice_api_served().await {
                        let resource = op.resource.split('/').next().unwrap_or(op.resource);
                        CliError::CrdsMissing {
                            server: self.server.clone(),
                            resource: resource.to_string(),
                        }
                    } else {
                        CliError::NotFound {
                            kind,
                            name: op.name.to_string(),
                            namespace: self.namespace.clone(),
                        }
                    }
                }
                403 => CliError::Forbidden {
                    verb: op.verb.to_string(),
                    resource: op.resource.to_string(),
                    group: op.group.to_string(),
                    namespace: self.namespace.clone(),
                    message: one_line(&status.message),
                },
                _ => CliError::Api {
                    verb: op.verb.to_string(),
                    resource: op.resource.to_string(),
                    name: op.name.to_string(),
                    message: one_line(&status.message),
                },
            },
            kube::Error::HyperError(e) => CliError::Unreachable {
                server: self.server.clone(),
                cause: one_line(&root_cause(&e)),
            },
            kube::Error::Service(e) => CliError::Unreachable {
                server: self.server.clone(),
                cause: one_line(&root_cause(e.as_ref())),
            },
            other => CliError::Api {
                verb: op.verb.to_string(),
                resource: op.resource.to_string(),
                name: op.name.to_string(),
                message: one_line(&other.to_string()),
            },
        }
    }

    /// True when the API server serves `sluice.dev/v1alpha1` (checked only after a 404).
    async fn sluice_api_served(&self) -> bool {
        match self
            .client
            .list_api_group_resources("sluice.dev/v1alpha1")
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.name == "rollouts"),
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            // Unknown: do not claim the CRDs are missing.
            Err(_) => true,
        }
    }
}

/// The innermost error's message: "connection refused" rather than a chain of wrappers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    let mut messages = vec![current.to_string()];
    while let Some(next) = current.source() {
        messages.push(next.to_string());
        current = next;
    }
    messages.pop().unwrap_or_default()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

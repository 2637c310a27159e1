//! What users may put into the pods the operator creates for them. The operator creates pods
//! with its own rights, so whoever may create a TrainingJob may create pods of the shapes this
//! policy allows (docs: charts/anyk/README.md). Everything beyond the defaults is off unless the
//! operator's configuration turns it on.

use crate::crd::{PodOverrides, TrainingJob};

/// The operator's configuration of what jobs may ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPolicy {
    /// A data set on a node's file system (`dataset.hostPath`): a hostPath volume breaks the
    /// "restricted" Pod Security Standard and reads any directory of the node.
    pub allow_host_path: bool,
    /// Images a job may name instead of the operator's (`server.image`, `worker.image`), by
    /// prefix (e.g. `registry.example.com/ml/`). Empty: no overrides.
    pub allowed_image_prefixes: Vec<String>,
    /// Toleration keys a job may add. `*` allows any, including a key-less toleration (which
    /// tolerates every taint).
    pub allowed_toleration_keys: Vec<String>,
}

impl Default for PodPolicy {
    fn default() -> Self {
        Self {
            allow_host_path: false,
            allowed_image_prefixes: Vec::new(),
            allowed_toleration_keys: vec!["nvidia.com/gpu".into()],
        }
    }
}

/// Why `job` asks for more than `policy` allows, if it does.
pub fn check(job: &TrainingJob, policy: &PodPolicy) -> Result<(), String> {
    if job.spec.dataset.host_path.is_some() && !policy.allow_host_path {
        return Err("dataset.hostPath is not allowed by the operator's configuration (allowHostPath)".into());
    }
    for (which, overrides) in [("server", &job.spec.server), ("worker", &job.spec.worker)] {
        check_overrides(which, overrides, policy)?;
    }
    Ok(())
}

fn check_overrides(which: &str, overrides: &PodOverrides, policy: &PodPolicy) -> Result<(), String> {
    if let Some(image) = &overrides.image {
        let allowed = policy
            .allowed_image_prefixes
            .iter()
            .any(|p| image.starts_with(p.as_str()));
        if !allowed {
            return Err(format!(
                "{which}.image {image:?} is not allowed by the operator's configuration (allowedImagePrefixes)"
            ));
        }
    }
    let any = policy.allowed_toleration_keys.iter().any(|k| k == "*");
    for toleration in overrides.tolerations.iter().flatten() {
        let key = toleration.key.as_deref().unwrap_or("");
        if !any && (key.is_empty() || !policy.allowed_toleration_keys.iter().any(|k| k == key)) {
            return Err(format!(
                "{which}.tolerations: key {key:?} is not allowed by the operator's configuration (allowedTolerationKeys)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use anyk_testkit::training_job;
    use serde_json::json;

    use super::*;

    fn job(spec: serde_json::Value) -> TrainingJob {
        training_job("j").spec(spec).build()
    }

    #[test]
    fn the_default_policy_refuses_host_paths_foreign_images_and_broad_tolerations() {
        let policy = PodPolicy::default();
        assert_eq!(check(&job(json!({})), &policy), Ok(()));
        let host = job(json!({ "dataset": { "persistentVolumeClaim": null, "hostPath": "/etc" } }));
        assert!(check(&host, &policy).unwrap_err().contains("hostPath"));
        let image = job(json!({ "worker": { "image": "evil/miner:1" } }));
        assert!(check(&image, &policy).unwrap_err().contains("worker.image"));
        let gpu =
            job(json!({ "worker": { "tolerations": [{ "key": "nvidia.com/gpu", "operator": "Exists" }] } }));
        assert_eq!(check(&gpu, &policy), Ok(()));
        let all = job(json!({ "server": { "tolerations": [{ "operator": "Exists" }] } }));
        assert!(check(&all, &policy).unwrap_err().contains("server.tolerations"));
    }

    #[test]
    fn the_operator_configuration_opens_what_it_names() {
        let policy = PodPolicy {
            allow_host_path: true,
            allowed_image_prefixes: vec!["registry.example.com/ml/".into()],
            allowed_toleration_keys: vec!["*".into()],
        };
        let spec = json!({
            "dataset": { "persistentVolumeClaim": null, "hostPath": "/data" },
            "worker": { "image": "registry.example.com/ml/worker:2", "tolerations": [{ "operator": "Exists" }] }
        });
        assert_eq!(check(&job(spec), &policy), Ok(()));
        let elsewhere = job(json!({ "worker": { "image": "registry.example.com/other/x:1" } }));
        assert!(check(&elsewhere, &policy).is_err());
    }
}

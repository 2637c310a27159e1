//! Shared by the operator's cluster tests.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyk_operator::crd::TrainingJob;
use anyk_testkit::eventually;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, CustomResourceExt};

/// Installs (server-side apply, idempotent) the TrainingJob CRD and waits until it is served.
pub async fn install_crd(client: kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = TrainingJob::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("anyk-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    eventually("CRD Established", Duration::from_secs(30), || async {
        let crd = crds.get(&name).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

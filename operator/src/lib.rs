//! anyk's Kubernetes operator: the TrainingJob resource (`crd`), the desired objects of a job
//! (`build`, pure), what its pods look like (`observe`), self-healing decisions (`heal`, pure),
//! its status (`status`, pure), the link to its parameter server (`server_link`), the reconcile
//! (`controller`) and the operator's metrics.

pub mod build;
pub mod controller;
pub mod crd;
pub mod heal;
pub mod metrics;
pub mod observe;
pub mod server_link;
pub mod status;

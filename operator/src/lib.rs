//! anyk's Kubernetes operator. So far: the TrainingJob resource (`crd`), its CRD generator, and
//! the desired objects of a job (`build`, pure).
//! `controller` applies them and reports coverage; pushing layouts and self-healing come next.

pub mod build;
pub mod controller;
pub mod crd;
pub mod heal;

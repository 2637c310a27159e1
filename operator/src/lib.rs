//! anyk's Kubernetes operator. So far: the TrainingJob resource (`crd`), its CRD generator, and
//! the desired objects of a job (`build`, pure).
//! The reconciler (build desired pods, apply, push layouts, self-heal) is the next step.

pub mod build;
pub mod crd;

//! anyk's Kubernetes operator. So far: the TrainingJob resource (`crd`) and its CRD generator.
//! The reconciler (build desired pods, apply, push layouts, self-heal) is the next step.

pub mod crd;

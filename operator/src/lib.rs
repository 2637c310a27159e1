//! anyk's Kubernetes operator: the TrainingJob resource (`crd`), the objects a job owns
//! (`children`, pure), what its pods look like (`observe`, pure), its status (`status`, pure), the
//! reconcile as read -> decide (pure) -> apply -> ask the server (`reconcile`), the link to the
//! parameter server (`server_link`), the controller wiring (`controller`), the operator's
//! settings and metrics. The healing policy itself is in `anyk_core::heal`.

pub mod caches;
pub mod children;
pub mod controller;
pub mod crd;
pub mod expectations;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod reconcile;
pub mod server_link;
pub mod settings;
pub mod status;
pub mod tls;

//! Work on a push that needs no job state: done before the job lock is taken.

use anyk_core::part::Part;
use anyk_proto::v1::GradientRequest;

use super::agreement;
use crate::error::RequestError;
use crate::tensor;

/// A push's O(model) work, done before the job lock is taken: its bytes checked (a refusal is
/// kept for its turn among the checks; they stay bytes until they are added to another part)
/// and, when it can be compared with another copy, the digest of its wire bytes.
pub struct Prepared {
    pub(super) values: Result<Part, RequestError>,
    pub(super) digest: Option<agreement::Digest>,
}

impl Prepared {
    /// Outside strict mode only single blocks are hashed: they are what two holders may both
    /// send (backups); a subtree's sum comes from one worker, and hashing 8 of them per step
    /// at 8.5M parameters cost more than aggregating them.
    pub fn new(req: &GradientRequest, strict: bool) -> Self {
        Self {
            values: tensor::checked_part(req.gradient.as_ref()),
            digest: (strict || req.blocks.len() == 1).then(|| Self::digest(req)),
        }
    }

    pub(super) fn digest(req: &GradientRequest) -> agreement::Digest {
        agreement::digest(req.gradient.as_ref().map_or(&[][..], |t| &t.data[..]))
    }
}

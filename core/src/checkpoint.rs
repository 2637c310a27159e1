//! The checkpoint file format: everything the parameter server needs to resume a job.
//!
//! `ANYKCKPT1\n`, an 8-byte little-endian header length, a JSON header, the raw f32 arrays
//! (parameters, then optimizer moments), and a SHA-256 of all that. A torn or altered file fails
//! to decode instead of resuming from garbage; writers still write-then-rename (server side).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Layout, optimizer::OptimizerConfig, tensor_bytes};

const MAGIC: &[u8] = b"ANYKCKPT1\n";

/// The state of a job after `step` completed steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub layout: Option<Layout>,
    pub optimizer: crate::optimizer::Optimizer,
    pub params: Vec<f32>,
    /// Loss of the last aggregated step (mean over its blocks), for progress after a resume.
    pub loss: f32,
}

#[derive(Serialize, Deserialize)]
struct Header {
    step: u64,
    layout: Option<Layout>,
    optimizer: OptimizerConfig,
    updates: u64,
    params: usize,
    first_moment: usize,
    second_moment: usize,
    loss: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not an anyk checkpoint (bad magic)")]
    BadMagic,
    #[error("checkpoint is truncated")]
    Truncated,
    #[error("checkpoint checksum does not match its contents")]
    Checksum,
    #[error("checkpoint header is invalid")]
    Header(#[source] serde_json::Error),
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            step: self.step,
            layout: self.layout.clone(),
            optimizer: self.optimizer.config,
            updates: self.optimizer.updates,
            params: self.params.len(),
            first_moment: self.optimizer.first_moment.len(),
            second_moment: self.optimizer.second_moment.len(),
            loss: self.loss,
        };
        let header = serde_json::to_vec(&header).expect("header serializes");
        let mut out = MAGIC.to_vec();
        out.extend((header.len() as u64).to_le_bytes());
        out.extend(header);
        for array in [
            &self.params,
            &self.optimizer.first_moment,
            &self.optimizer.second_moment,
        ] {
            out.extend(tensor_bytes::to_bytes(array));
        }
        let sum = Sha256::digest(&out);
        out.extend(sum);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let body = bytes
            .len()
            .checked_sub(32)
            .filter(|&n| n >= MAGIC.len() + 8)
            .map(|n| &bytes[..n])
            .ok_or(CheckpointError::Truncated)?;
        if !body.starts_with(MAGIC) {
            return Err(CheckpointError::BadMagic);
        }
        if Sha256::digest(body).as_slice() != &bytes[body.len()..] {
            return Err(CheckpointError::Checksum);
        }
        let rest = &body[MAGIC.len()..];
        let header_len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
        let rest = &rest[8..];
        let header: Header =
            serde_json::from_slice(rest.get(..header_len).ok_or(CheckpointError::Truncated)?)
                .map_err(CheckpointError::Header)?;
        let mut arrays = &rest[header_len..];
        let mut take = |len: usize| -> Result<Vec<f32>, CheckpointError> {
            let bytes = arrays.get(..len * 4).ok_or(CheckpointError::Truncated)?;
            arrays = &arrays[len * 4..];
            Ok(tensor_bytes::from_bytes(bytes).expect("whole f32 values"))
        };
        let params = take(header.params)?;
        let first_moment = take(header.first_moment)?;
        let second_moment = take(header.second_moment)?;
        Ok(Self {
            step: header.step,
            layout: header.layout,
            optimizer: crate::optimizer::Optimizer {
                config: header.optimizer,
                updates: header.updates,
                first_moment,
                second_moment,
            },
            params,
            loss: header.loss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::Optimizer;

    fn sample() -> Checkpoint {
        let mut optimizer = Optimizer::new(OptimizerConfig::adam(0.01), 3);
        let mut params = vec![0.5, -1.0, 2.0];
        optimizer.apply(&mut params, &[0.1, 0.2, -0.3]);
        Checkpoint {
            step: 12,
            layout: Some(crate::plan(6, 2, 4, 3).unwrap()),
            optimizer,
            params,
            loss: 0.7,
        }
    }

    #[test]
    fn round_trips() {
        let ckpt = sample();
        assert_eq!(Checkpoint::decode(&ckpt.encode()).unwrap(), ckpt);
    }

    #[test]
    fn torn_or_altered_files_are_rejected() {
        let bytes = sample().encode();
        assert!(matches!(
            Checkpoint::decode(&bytes[..bytes.len() - 5]),
            Err(CheckpointError::Checksum)
        ));
        assert!(matches!(
            Checkpoint::decode(&bytes[..20]),
            Err(CheckpointError::Truncated | CheckpointError::Checksum)
        ));
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(matches!(
            Checkpoint::decode(&flipped),
            Err(CheckpointError::Checksum)
        ));
        assert!(Checkpoint::decode(b"hello world, this is not a checkpoint at all, not at all.").is_err());
    }
}

//! The checkpoint file format: everything the parameter server needs to resume a job.
//!
//! `ANYKCKPT1\n`, an 8-byte little-endian header length, a JSON header, the raw f32 arrays
//! (parameters, then optimizer moments), and a SHA-256 of all that. A torn or altered file fails
//! to decode instead of resuming from garbage; writers still write-then-rename (server side).
//!
//! The header also says which job wrote the file ([`JobIdentity`]) and carries its digest. Files
//! written before that have neither: they decode with `job: None`, and the server resumes them
//! with a warning (it cannot tell whose they are); every file written now has both.
//!
//! The header carries the job's [`History`] too (what `anyk plot` draws). Files from before it
//! decode with an empty history, and a checkpoint with an empty history is written as before.

use serde::{Deserialize, Serialize};
use std::io::Write;

use sha2::{Digest, Sha256};

use crate::history::{History, HistoryError};
use crate::job::JobIdentity;
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
    /// The job that wrote it; `None` in files from before job digests.
    pub job: Option<JobIdentity>,
    /// The steps and layout changes so far; empty in files from before histories.
    pub history: History,
}

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<JobIdentity>,
    /// `job.digest()`, for tools that compare jobs without parsing them; checked on decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_digest: Option<String>,
    step: u64,
    layout: Option<Layout>,
    optimizer: OptimizerConfig,
    updates: u64,
    params: usize,
    first_moment: usize,
    second_moment: usize,
    /// JSON has no NaN: a non-finite loss (NaN before the first step) is written as null.
    loss: Option<f32>,
    #[serde(default, skip_serializing_if = "History::is_empty")]
    history: History,
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
    #[error("checkpoint's job digest does not match its job")]
    JobDigest,
    #[error("checkpoint's optimizer settings are not finite")]
    OptimizerSettings,
    #[error("checkpoint's history is invalid")]
    History(#[source] HistoryError),
}

/// A writer that also hashes what goes through it (the checkpoint's trailing SHA-256).
struct Hashed<'a, W: std::io::Write> {
    out: &'a mut W,
    sum: Sha256,
}

impl<W: std::io::Write> std::io::Write for Hashed<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(bytes)?;
        self.sum.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Writes [`Checkpoint::encode`]'s bytes to `out` as they are made, a slice of each array at a
    /// time: a checkpoint of a large model never exists twice in memory (at 34M parameters the
    /// encoded file is 406 MB).
    pub fn encode_into(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let header = Header {
            job: self.job.clone(),
            job_digest: self.job.as_ref().map(JobIdentity::digest),
            step: self.step,
            layout: self.layout.clone(),
            optimizer: self.optimizer.config,
            updates: self.optimizer.updates,
            params: self.params.len(),
            first_moment: self.optimizer.first_moment.len(),
            second_moment: self.optimizer.second_moment.len(),
            loss: self.loss.is_finite().then_some(self.loss),
            history: self.history.clone(),
        };
        let header = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let mut hashed = Hashed {
            out,
            sum: Sha256::new(),
        };
        hashed.write_all(MAGIC)?;
        hashed.write_all(&(header.len() as u64).to_le_bytes())?;
        hashed.write_all(&header)?;
        for array in [
            &self.params,
            &self.optimizer.first_moment,
            &self.optimizer.second_moment,
        ] {
            for slice in array.chunks(1 << 16) {
                hashed.write_all(&tensor_bytes::to_bytes(slice))?;
            }
        }
        let Hashed { out, sum } = hashed;
        out.write_all(&sum.finalize())
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
        if header.job.as_ref().map(JobIdentity::digest) != header.job_digest {
            return Err(CheckpointError::JobDigest);
        }
        // JSON has no infinity: a setting beyond f32 (1e68) reads as one, and would be written
        // back as null, which no decoder takes (found by fuzz/fuzz_targets/checkpoint_decode.rs).
        let mut settings =
            std::iter::once(&header.optimizer).chain(header.job.as_ref().map(|j| &j.config.optimizer));
        if !settings.all(finite) {
            return Err(CheckpointError::OptimizerSettings);
        }
        header.history.check().map_err(CheckpointError::History)?;
        let mut arrays = &rest[header_len..];
        let mut take = |len: usize| -> Result<Vec<f32>, CheckpointError> {
            let len = len.checked_mul(4).ok_or(CheckpointError::Truncated)?;
            let bytes = arrays.get(..len).ok_or(CheckpointError::Truncated)?;
            arrays = &arrays[len..];
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
            loss: header.loss.unwrap_or(f32::NAN),
            job: header.job,
            history: header.history,
        })
    }
}

fn finite(config: &OptimizerConfig) -> bool {
    match *config {
        OptimizerConfig::Sgd { lr, momentum } => [lr, momentum].iter().all(|v| v.is_finite()),
        OptimizerConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
        } => [lr, beta1, beta2, eps].iter().all(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::StepRecord;
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
            job: Some(JobIdentity {
                config: crate::job::JobConfig {
                    job_id: Some("uid-1".into()),
                    seed: 1,
                    batch: 32,
                    blocks: 6,
                    optimizer: OptimizerConfig::adam(0.01),
                    gradients: Default::default(),
                },
                units: vec![(0, 6)],
                params: 3,
            }),
            history: History::default(),
        }
    }

    /// `bytes` with `from` replaced by `to` in its header, and a new checksum.
    fn edited(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let body = &bytes[..bytes.len() - 32];
        let at = body
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        assert_eq!(from.len(), to.len(), "the header length stays");
        let mut out = body.to_vec();
        out[at..at + to.len()].copy_from_slice(to.as_bytes());
        let sum = Sha256::digest(&out);
        out.extend(sum);
        out
    }

    #[test]
    fn round_trips() {
        let ckpt = sample();
        assert_eq!(Checkpoint::decode(&ckpt.encode()).unwrap(), ckpt);
        let digest = ckpt.job.as_ref().unwrap().digest();
        let text = String::from_utf8_lossy(&ckpt.encode()).into_owned();
        assert!(text.contains(&format!("\"job_digest\":\"{digest}\"")), "{text}");
    }

    #[test]
    fn a_history_round_trips_exactly_and_is_checked() {
        let mut history = History::default();
        let layout = sample().layout.unwrap();
        history.record_change(None, &layout, 0, 0);
        for step in 1..=12 {
            let loss = 1.0 / step as f32 + 1e-7;
            let step_ms = Some(step as f32 / 3.0);
            let (skipped, margin, elapsed_ms) = (step % 2, 1, step * 7);
            let record = StepRecord {
                step,
                loss,
                step_ms,
                skipped,
                margin,
                elapsed_ms,
            };
            history.record_step(record);
        }
        let ckpt = Checkpoint { history, ..sample() };
        assert_eq!(Checkpoint::decode(&ckpt.encode()).unwrap(), ckpt);
        let bytes = edited(&ckpt.encode(), "\"span\":1,", "\"span\":0,");
        assert!(matches!(
            Checkpoint::decode(&bytes),
            Err(CheckpointError::History(_))
        ));
    }

    #[test]
    fn a_non_finite_loss_round_trips_as_nan() {
        // Found by fuzz/fuzz_targets/initialize.rs: the loss is NaN until the first step, and
        // JSON writes it as null, which a checkpoint taken at step 0 could not decode.
        for loss in [f32::NAN, f32::INFINITY] {
            let ckpt = Checkpoint { loss, ..sample() };
            assert!(Checkpoint::decode(&ckpt.encode()).unwrap().loss.is_nan());
        }
    }

    #[test]
    fn an_array_length_that_overflows_is_truncated() {
        // Seen while writing fuzz/fuzz_targets/checkpoint_decode.rs: 4 * params wrapped around
        // in a release build (and panicked in a debug one).
        let bytes = sample().encode();
        let len = u64::from_le_bytes(bytes[10..18].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[18..18 + len]).unwrap();
        // 4 times this wraps to 0: an empty parameter array, had it not been refused.
        let huge = format!("\"params\":{},\"first_moment\"", usize::MAX / 4 + 1);
        let altered = header.replace("\"params\":3,\"first_moment\"", &huge);
        assert_ne!(altered, header);
        let mut out = MAGIC.to_vec();
        out.extend((altered.len() as u64).to_le_bytes());
        out.extend(altered.as_bytes());
        out.extend(&bytes[18 + len..bytes.len() - 32]);
        let sum = Sha256::digest(&out);
        out.extend(sum);
        assert!(matches!(
            Checkpoint::decode(&out),
            Err(CheckpointError::Truncated)
        ));
    }

    #[test]
    fn optimizer_settings_beyond_f32_are_refused() {
        let ckpt = Checkpoint {
            job: None,
            ..sample()
        };
        let bytes = edited(&ckpt.encode(), "\"eps\":1e-8", "\"eps\":1e68");
        assert!(matches!(
            Checkpoint::decode(&bytes),
            Err(CheckpointError::OptimizerSettings)
        ));
    }

    #[test]
    fn files_from_before_job_digests_still_decode() {
        // Without a job and a history the header is byte for byte what the format wrote before
        // job digests and histories.
        let old = Checkpoint {
            job: None,
            ..sample()
        };
        let bytes = old.encode();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("job") && !text.contains("history"), "{text}");
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), old);
    }

    #[test]
    fn a_job_that_does_not_match_its_digest_is_rejected() {
        let bytes = sample().encode();
        let altered = edited(&bytes, "\"seed\":1,", "\"seed\":2,");
        assert!(matches!(
            Checkpoint::decode(&altered),
            Err(CheckpointError::JobDigest)
        ));
        let resealed = edited(&bytes, "\"seed\":1,", "\"seed\":1,");
        assert!(Checkpoint::decode(&resealed).is_ok());
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

//! What decides a job's result, and the digest every checkpoint carries of it, so that a server
//! never resumes a checkpoint written by another job (or by this job with other settings).
//!
//! The digest is SHA-256 over a canonical byte string (below), not over JSON: floats enter as
//! their bits, so equal settings always give equal digests whatever prints them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::optimizer::OptimizerConfig;
use crate::precision::GradientPrecision;

/// What a server is configured with that decides the result: compared on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// Who the job is (the operator passes the TrainingJob's UID); `None` for an unnamed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub seed: u64,
    pub batch: u32,
    pub blocks: u32,
    pub optimizer: OptimizerConfig,
    /// Checkpoints written before the field existed are f32 jobs.
    #[serde(default)]
    pub gradients: GradientPrecision,
}

/// Everything that decides a checkpoint's result: the configuration, the reduction units of
/// its layout (how block gradients are summed) and the model's parameter count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobIdentity {
    pub config: JobConfig,
    pub units: Vec<(u32, u32)>,
    pub params: u64,
}

/// A checkpoint's job differs from this server's: the fields that differ, as saved and as here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it was written by another job ({}; this server has {})", .saved.join(", "), .ours.join(", "))]
pub struct JobMismatch {
    pub saved: Vec<String>,
    pub ours: Vec<String>,
}

impl JobConfig {
    /// `Err` naming every field that differs between the job that wrote a checkpoint (`self`)
    /// and `ours`.
    pub fn check(&self, ours: &JobConfig) -> Result<(), JobMismatch> {
        let theirs = self.fields();
        let mine = ours.fields();
        // Fields of both (an SGD job has no betas): a different optimizer differs in "optimizer".
        let (saved, ours): (Vec<String>, Vec<String>) = theirs
            .into_iter()
            .filter_map(|(name, saved)| {
                let (_, here) = mine.iter().find(|(n, _)| *n == name)?;
                (saved != *here).then(|| (saved, here.clone()))
            })
            .unzip();
        if saved.is_empty() {
            Ok(())
        } else {
            Err(JobMismatch { saved, ours })
        }
    }

    /// Each field as a name and its description for messages ("seed 1").
    fn fields(&self) -> Vec<(&'static str, String)> {
        let id = match &self.job_id {
            Some(id) => format!("job id {id:?}"),
            None => "no job id".to_string(),
        };
        let mut fields = vec![
            ("job id", id),
            ("seed", format!("seed {}", self.seed)),
            ("batch", format!("batch {}", self.batch)),
            ("blocks", format!("{} blocks", self.blocks)),
        ];
        let (kind, numbers) = optimizer_fields(&self.optimizer);
        fields.push(("optimizer", format!("optimizer {kind}")));
        fields.extend(numbers.into_iter().map(|(name, v)| (name, format!("{name} {v}"))));
        fields.push(("gradients", format!("{} gradients", self.gradients)));
        fields
    }
}

impl JobIdentity {
    /// SHA-256 (hex) of the canonical serialization.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }

    /// One `name=value` line per field, in a fixed order; strings length-prefixed, floats as
    /// their bits. Changing this changes every digest: version it instead.
    fn canonical(&self) -> Vec<u8> {
        let c = &self.config;
        let mut out = String::from("anyk-job-v1\n");
        match &c.job_id {
            Some(id) => out.push_str(&format!("job_id={}:{id}\n", id.len())),
            None => out.push_str("job_id=-\n"),
        }
        out.push_str(&format!(
            "seed={}\nbatch={}\nblocks={}\n",
            c.seed, c.batch, c.blocks
        ));
        let (kind, numbers) = optimizer_fields(&c.optimizer);
        out.push_str(&format!("optimizer={kind}\n"));
        for (name, value) in numbers {
            out.push_str(&format!("{name}={:08x}\n", value.to_bits()));
        }
        // Added after v1; an f32 job's line is left out, so its digests stay what they were.
        if c.gradients != GradientPrecision::F32 {
            out.push_str(&format!("gradients={}\n", c.gradients));
        }
        let units: Vec<String> = self.units.iter().map(|(lo, hi)| format!("{lo}-{hi}")).collect();
        out.push_str(&format!("units={}\nparams={}\n", units.join(","), self.params));
        out.into_bytes()
    }
}

/// The optimizer's name and its settings, in a fixed order.
fn optimizer_fields(config: &OptimizerConfig) -> (&'static str, Vec<(&'static str, f32)>) {
    match *config {
        OptimizerConfig::Sgd { lr, momentum } => ("sgd", vec![("lr", lr), ("momentum", momentum)]),
        OptimizerConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
        } => (
            "adam",
            vec![("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps)],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> JobIdentity {
        JobIdentity {
            config: JobConfig {
                job_id: Some("0b1c-uid".into()),
                seed: 1,
                batch: 32,
                blocks: 24,
                optimizer: OptimizerConfig::adam(0.01),
                gradients: GradientPrecision::F32,
            },
            units: vec![(0, 12), (12, 24)],
            params: 1000,
        }
    }

    #[test]
    fn the_digest_changes_with_every_field() {
        let base = identity();
        let mut variants = Vec::new();
        let mut vary = |f: &dyn Fn(&mut JobIdentity)| {
            let mut v = base.clone();
            f(&mut v);
            variants.push(v.digest());
        };
        vary(&|v| v.config.job_id = None);
        vary(&|v| v.config.job_id = Some("other".into()));
        vary(&|v| v.config.seed = 2);
        vary(&|v| v.config.batch = 16);
        vary(&|v| v.config.blocks = 12);
        vary(&|v| v.config.optimizer = OptimizerConfig::adam(0.02));
        vary(&|v| v.config.optimizer = OptimizerConfig::sgd(0.01, 0.9));
        vary(&|v| v.config.optimizer = OptimizerConfig::sgd(0.01, 0.5));
        vary(&|v| {
            if let OptimizerConfig::Adam { beta2, .. } = &mut v.config.optimizer {
                *beta2 = 0.99;
            }
        });
        vary(&|v| v.config.gradients = GradientPrecision::Bf16);
        vary(&|v| v.units = vec![(0, 24)]);
        vary(&|v| v.params = 1001);
        variants.push(base.digest());
        let distinct: std::collections::BTreeSet<_> = variants.iter().collect();
        assert_eq!(distinct.len(), variants.len(), "{variants:?}");
        assert_eq!(base.digest(), identity().digest(), "deterministic");
        assert_eq!(base.digest().len(), 64);
    }

    #[test]
    fn a_mismatch_names_what_differs() {
        let saved = identity().config;
        assert_eq!(saved.check(&saved.clone()), Ok(()));
        let ours = JobConfig {
            seed: 2,
            ..saved.clone()
        };
        assert_eq!(
            saved.check(&ours).unwrap_err().to_string(),
            "it was written by another job (seed 1; this server has seed 2)"
        );
        let ours = JobConfig {
            job_id: Some("other".into()),
            batch: 8,
            optimizer: OptimizerConfig::sgd(0.01, 0.9),
            ..saved.clone()
        };
        assert_eq!(
            saved.check(&ours).unwrap_err().to_string(),
            "it was written by another job (job id \"0b1c-uid\", batch 32, optimizer adam; \
             this server has job id \"other\", batch 8, optimizer sgd)"
        );
        let ours = JobConfig {
            job_id: None,
            optimizer: OptimizerConfig::adam(0.001),
            ..saved.clone()
        };
        let err = saved.check(&ours).unwrap_err();
        assert_eq!(err.saved, ["job id \"0b1c-uid\"", "lr 0.01"]);
        assert_eq!(err.ours, ["no job id", "lr 0.001"]);
        let ours = JobConfig {
            gradients: GradientPrecision::Bf16,
            ..saved.clone()
        };
        assert_eq!(
            saved.check(&ours).unwrap_err().to_string(),
            "it was written by another job (f32 gradients; this server has bf16 gradients)"
        );
    }

    #[test]
    fn an_f32_job_keeps_the_digest_it_had_before_gradients_were_recorded() {
        // The digest of `identity()` before the field existed (anyk-job-v1 without a gradients line).
        assert_eq!(
            identity().digest(),
            hex::encode(Sha256::digest(
                "anyk-job-v1\njob_id=8:0b1c-uid\nseed=1\nbatch=32\nblocks=24\noptimizer=adam\n\
                 lr=3c23d70a\nbeta1=3f666666\nbeta2=3f7fbe77\neps=322bcc77\nunits=0-12,12-24\nparams=1000\n"
            ))
        );
        let old: JobConfig = serde_json::from_str(
            r#"{"seed":1,"batch":32,"blocks":24,"optimizer":{"kind":"adam","lr":0.01,"beta1":0.9,"beta2":0.999,"eps":1e-8}}"#,
        )
        .unwrap();
        assert_eq!(old.gradients, GradientPrecision::F32);
    }
}

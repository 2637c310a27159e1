//! One step of a worker (docs/design.md, invariant 2 and the data path): its own share first,
//! sent as the sums of the largest reduction-tree subtrees it holds (one message when the share
//! is its whole unit), then backups. Backups of blocks whose first holder was late last step
//! start at once; the others only once the step is clearly overdue (`pacing.rs`), so a step with
//! no straggler spends no CPU on copies nobody needs. In strict mode every
//! block goes on its own and every copy at once: a block counts there once two holders agree.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyk_core::ReductionTree;
use anyk_core::minibatch::minibatch;
use anyk_proto::v1::{DataType, GradientRequest, GradientResponse, Tensor};
use tonic::{Code, Status};

use super::{Events, RunError, Worker};
use crate::model::{Model, tensor_to_bytes};

/// What a push told the worker about the step.
enum Pushed {
    /// Still open; these blocks have a gradient.
    Open(Vec<u32>),
    /// Aggregated.
    Over,
    /// The layout moved on: compute the step again under the new assignment.
    Redo,
}

/// How a step ended for this worker.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StepEnd {
    /// Aggregated, abandoned for a newer step, or nothing left to send.
    Over,
    /// The layout moved on before the step was aggregated: compute it again.
    Redo,
    /// Training is over.
    Finished,
}

impl Worker<'_> {
    /// Computes and sends gradients for `step`, whose parameters were set at `began`, until the
    /// server has them all or moved on.
    pub(super) async fn compute_step(
        &mut self,
        model: &mut Model,
        step: u64,
        late: &BTreeSet<u32>,
        began: Instant,
        events: &mut Events,
    ) -> Result<StepEnd, RunError> {
        let first = self.assignment.first_rank as usize;
        let share: Vec<u32> = self.assignment.blocks.iter().take(first).copied().collect();
        let mut covered: BTreeSet<u32> = BTreeSet::new();
        if let Some(end) = self
            .compute_and_send(model, step, &share, &mut covered, events)
            .await?
        {
            return Ok(end);
        }
        let deadline = self.pacing.backup_deadline(began.elapsed());
        let patience = deadline.saturating_sub(began.elapsed());
        self.backups(model, step, late, covered, patience, events).await
    }

    /// Computes `blocks`, then sends them as the largest reduction-tree subtrees they form (one
    /// message for a whole unit; each block alone in strict mode, so that copies from different
    /// holders can be compared). `None` while the step goes on.
    async fn compute_and_send(
        &mut self,
        model: &mut Model,
        step: u64,
        blocks: &[u32],
        covered: &mut BTreeSet<u32>,
        events: &mut Events,
    ) -> Result<Option<StepEnd>, RunError> {
        let epoch = self.assignment.epoch;
        let tree = self.tree();
        let mut leaves: BTreeMap<u32, (tch::Tensor, f32, Duration)> = BTreeMap::new();
        for &block in blocks {
            if let Some(end) = self.interrupted(epoch, events)? {
                return Ok(Some(end));
            }
            let leaf = self.block_gradient(model, step, block)?;
            let compute = leaf.2;
            leaves.insert(block, leaf);
            if self.straggle_after(compute, events).await? {
                return Ok(Some(StepEnd::Finished));
            }
        }
        let nodes: Vec<_> = if self.settings.strict {
            blocks.iter().filter_map(|&b| tree.node(b, b + 1)).collect()
        } else {
            tree.cover(|b| leaves.contains_key(&b))
        };
        // With bf16 gradients each unit is rounded on its own: a subtree above units goes
        // unit by unit (anyk_core::precision).
        let nodes: Vec<_> = match self.bf16_units() {
            true => nodes.into_iter().flat_map(|n| tree.units_within(n)).collect(),
            false => nodes,
        };
        for node in nodes {
            let (lo, hi) = tree.range(node);
            let (sum, loss) = tree.fold(
                node,
                &mut |b| {
                    let (gradient, loss, _) = leaves.remove(&b).ok_or(RunError::StreamEnded)?;
                    Ok::<_, RunError>((gradient, loss))
                },
                // In place: the same bits as `a + b`, without a model-sized tensor per add.
                &mut |(mut a, la), (b, lb)| {
                    a += &b;
                    Ok((a, la + lb))
                },
            )?;
            if let Some(end) = self.interrupted(epoch, events)? {
                return Ok(Some(end));
            }
            let mean_loss = loss / (hi - lo) as f32;
            match self
                .push(step, (lo..hi).collect(), &sum, mean_loss, events)
                .await?
            {
                Some(Pushed::Open(now)) => covered.extend(now),
                Some(Pushed::Over) => return Ok(Some(StepEnd::Over)),
                Some(Pushed::Redo) => return Ok(Some(StepEnd::Redo)),
                None => return Ok(Some(StepEnd::Finished)),
            }
        }
        Ok(None)
    }

    /// The rest of the assignment, late blocks first; the others after `patience`.
    async fn backups(
        &mut self,
        model: &mut Model,
        step: u64,
        late: &BTreeSet<u32>,
        mut covered: BTreeSet<u32>,
        patience: Duration,
        events: &mut Events,
    ) -> Result<StepEnd, RunError> {
        let epoch = self.assignment.epoch;
        let first = self.assignment.first_rank as usize;
        let rest: Vec<u32> = self.assignment.blocks.iter().skip(first).copied().collect();
        let strict = self.settings.strict;
        let urgent_block = |b: &u32| strict || late.contains(b);
        let (mut urgent, later): (Vec<u32>, Vec<u32>) = rest.into_iter().partition(urgent_block);
        if !strict {
            // The late blocks this worker covers (a late worker's whole unit, usually): computed
            // together and sent as one subtree where they form one.
            let todo: Vec<u32> = urgent.drain(..).filter(|b| !covered.contains(b)).collect();
            if let Some(end) = self
                .compute_and_send(model, step, &todo, &mut covered, events)
                .await?
            {
                return Ok(end);
            }
        }
        let mut waited = false;
        for block in urgent.into_iter().chain(later) {
            if covered.contains(&block) {
                continue;
            }
            if !urgent_block(&block) && !waited {
                waited = true;
                if self.wait_interruptibly(patience, events).await? {
                    return Ok(StepEnd::Finished);
                }
            }
            if let Some(end) = self.interrupted(epoch, events)? {
                return Ok(end);
            }
            let (gradient, loss, compute) = self.block_gradient(model, step, block)?;
            if self.straggle_after(compute, events).await? {
                return Ok(StepEnd::Finished);
            }
            if let Some(end) = self.interrupted(epoch, events)? {
                return Ok(end);
            }
            match self.push(step, vec![block], &gradient, loss, events).await? {
                Some(Pushed::Open(now)) => covered.extend(now),
                Some(Pushed::Over) => return Ok(StepEnd::Over),
                Some(Pushed::Redo) => return Ok(StepEnd::Redo),
                None => return Ok(StepEnd::Finished),
            }
        }
        self.stats.steps += 1;
        Ok(StepEnd::Over)
    }

    /// Whether the step should stop here: training over, a newer step, or a new layout (the
    /// blocks this step was planned on may have moved: it is computed again under the new one).
    fn interrupted(&mut self, epoch: u64, events: &mut Events) -> Result<Option<StepEnd>, RunError> {
        if self.drain(events)? {
            return Ok(Some(StepEnd::Finished));
        }
        if self.abandoned() {
            return Ok(Some(StepEnd::Over));
        }
        Ok((self.assignment.epoch != epoch).then_some(StepEnd::Redo))
    }

    /// A straggler's extra wait after a block that took `compute`; true when training is over.
    async fn straggle_after(&mut self, compute: Duration, events: &mut Events) -> Result<bool, RunError> {
        let delay = self.config.straggle.delay(compute, self.send_time);
        if delay.is_zero() {
            return Ok(false);
        }
        self.wait_interruptibly(delay, events).await
    }

    /// Sends the sum of `blocks`; None when training is over.
    async fn push(
        &mut self,
        step: u64,
        blocks: Vec<u32>,
        gradient: &tch::Tensor,
        loss: f32,
        events: &mut Events,
    ) -> Result<Option<Pushed>, RunError> {
        let mut bytes = tensor_to_bytes(gradient)?;
        self.config.corruption.apply_bytes(step, &mut bytes);
        let count = blocks.len() as u64;
        let tensor = match self.bf16_units() && self.is_unit(&blocks) {
            true => bf16_tensor(&bytes),
            false => Tensor::from_f32_bytes(bytes),
        };
        match self.send(step, blocks, tensor, loss).await {
            Ok(response) => {
                self.stats.blocks_skipped = self.stats.blocks_skipped.max(response.covered.len() as u64);
                if response.step_done {
                    self.stats.steps += 1;
                    return Ok(Some(Pushed::Over));
                }
                Ok(Some(Pushed::Open(response.covered)))
            }
            // The layout moved on; its assignment is on the way, and the step is computed again
            // under it. (Or training failed on a non-finite step: nothing more comes, and the
            // worker waits, not crashing, until its supervisor ends the job.)
            Err(status) if status.code() == Code::FailedPrecondition => {
                tracing::info!(%status, "gradient refused; waiting for the next event");
                let Some(event) = events.recv().await else {
                    return Err(RunError::StreamEnded);
                };
                Ok(if self.apply(event?)? {
                    None
                } else {
                    Some(Pushed::Redo)
                })
            }
            Err(status) if status.code() == Code::PermissionDenied => {
                tracing::debug!(%status, count, "blocks moved away");
                Ok(Some(Pushed::Open(Vec::new())))
            }
            Err(source) => Err(RunError::Refused {
                action: "a gradient",
                source,
            }),
        }
    }

    /// One push, timing the round trip.
    async fn send(
        &mut self,
        step: u64,
        blocks: Vec<u32>,
        gradient: Tensor,
        loss: f32,
    ) -> Result<GradientResponse, Status> {
        let request = GradientRequest {
            worker: self.config.worker,
            step,
            epoch: self.assignment.epoch,
            blocks,
            gradient: Some(gradient),
            loss,
        };
        self.stats.gradients_sent += 1;
        let pushed = Instant::now();
        let result = self.client.push_gradient(with_part_hint(request)).await;
        let send = pushed.elapsed();
        // Exponential average, so one slow round trip does not dominate the straggle delay.
        self.send_time = (self.send_time * 3 + send) / 4;
        tracing::debug!(step, send_us = send.as_micros() as u64, "pushed");
        result.map(tonic::Response::into_inner)
    }

    /// One block's flat gradient, its loss, and how long it took.
    fn block_gradient(
        &mut self,
        model: &mut Model,
        step: u64,
        block: u32,
    ) -> Result<(tch::Tensor, f32, Duration), RunError> {
        let started = Instant::now();
        let samples = self.cache.get(block).ok_or(RunError::BlockNotLoaded(block))?;
        let rows = minibatch(
            self.settings.seed,
            step,
            block,
            samples.len(),
            self.settings.batch_size as usize,
        );
        let (x, y) = samples.select(&rows);
        let (gradient, loss) = tokio::task::block_in_place(|| model.gradient_tensor(&x, &y))?;
        Ok((gradient, loss, started.elapsed()))
    }

    /// Whether the job's whole units travel as bf16.
    fn bf16_units(&self) -> bool {
        self.settings.gradient_dtype == DataType::Bf16 as i32
    }

    /// Whether `blocks` (consecutive) are exactly one reduction unit.
    fn is_unit(&mut self, blocks: &[u32]) -> bool {
        let tree = self.tree();
        let node = blocks
            .first()
            .zip(blocks.last())
            .and_then(|(&lo, &last)| tree.node(lo, last + 1));
        node.is_some_and(|n| tree.is_unit(n))
    }

    /// The reduction tree of the current assignment's units (rebuilt only when they change).
    fn tree(&mut self) -> std::sync::Arc<ReductionTree> {
        let bounds = &self.assignment.unit_bounds;
        match &self.tree {
            Some((built_for, tree)) if built_for == bounds => tree.clone(),
            _ => {
                let units: Vec<(u32, u32)> = bounds.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                let tree = std::sync::Arc::new(ReductionTree::new(&units));
                self.tree = Some((bounds.clone(), tree.clone()));
                tree
            }
        }
    }
}

/// Little-endian f32 bytes as a bf16 wire tensor, each value rounded to nearest even (by
/// anyk_core::precision, the server's own rounding, not libtorch's).
fn bf16_tensor(f32_le: &[u8]) -> Tensor {
    let data = anyk_core::precision::bf16_le_from_f32_le(f32_le);
    Tensor {
        dtype: DataType::Bf16 as i32,
        length: (data.len() / 2) as u64,
        data: data.into(),
    }
}

/// `request` with the part it carries as metadata (`STEP/LO/HI`): the server reads waiting
/// pushes in the order that lets parts of the reduction tree meet (server/src/admission).
fn with_part_hint(request: GradientRequest) -> tonic::Request<GradientRequest> {
    let range = request.blocks.first().zip(request.blocks.last());
    let hint = range.map(|(&lo, &last)| anyk_proto::transport::part_metadata(request.step, lo, last + 1));
    let mut request = tonic::Request::new(request);
    if let Some(value) = hint.and_then(|h| h.parse().ok()) {
        request
            .metadata_mut()
            .insert(anyk_proto::transport::PART_METADATA, value);
    }
    request
}

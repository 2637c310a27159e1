//! The worker processes of a local run, and what the supervisor sees of each: the
//! [`WorkerState`] the healing policy ([`anyk_core::heal`]) decides on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyk_core::numerics::REPRODUCIBLE_ENV;
use anyk_core::{Numerics, WorkerState};
use anyk_proto::launch::WorkerLaunch;
use anyk_proto::v1::Progress;
use tokio::process::Child;

use super::certs;
use super::node_type::{Capability, NodeType, node_of};
use super::processes::{start_worker, worker_log_name};
use super::{Faults, LocalError};

pub struct Fleet {
    bin: PathBuf,
    logs: PathBuf,
    /// How every worker is started; the id and the injected faults are set per start.
    launch: WorkerLaunch,
    /// The emulated node each worker runs on (its replacements too: the node stays).
    node_types: Vec<NodeType>,
    children: BTreeMap<u32, Child>,
    incarnations: BTreeMap<u32, u32>,
    /// `states[w]` is what the supervisor saw of worker w.
    states: Vec<WorkerState>,
    /// Workers started but not yet seen joining, with the server's join count for their id when
    /// they were started: a worker is Ready once that count grows.
    awaiting_join: BTreeMap<u32, u64>,
}

impl Fleet {
    /// Starts workers 0..n, on the emulated nodes `node_types` names, slowed down and corrupted
    /// as `faults` say.
    pub fn start(
        bin: PathBuf,
        logs: PathBuf,
        launch: WorkerLaunch,
        workers: u32,
        node_types: Vec<NodeType>,
        faults: &Faults,
    ) -> Result<Self, LocalError> {
        let mut fleet = Self {
            bin,
            logs,
            launch,
            node_types,
            children: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            states: (0..workers).map(|_| WorkerState::Missing).collect(),
            awaiting_join: BTreeMap::new(),
        };
        for w in 0..workers {
            let launch = WorkerLaunch {
                worker: w,
                straggle: faults.straggle_factor(w),
                corrupt_from: faults.corrupt_from(w),
                ..fleet.launch.clone()
            };
            // The server is fresh: no worker has joined yet.
            fleet.spawn(launch, 0)?;
        }
        Ok(fleet)
    }

    fn spawn(&mut self, launch: WorkerLaunch, joins_before: u64) -> Result<(), LocalError> {
        let worker = launch.worker;
        let launch = WorkerLaunch {
            tls_dir: launch
                .tls_dir
                .as_deref()
                .map(|dir| certs::worker_dir(dir, worker)),
            ..launch
        };
        let incarnation = self.incarnations.get(&worker).copied().unwrap_or_default();
        let env = worker_env(node_of(&self.node_types, worker), launch.model.numerics);
        let child = start_worker(&self.bin, &launch, &env, incarnation, &self.logs)?;
        self.children.insert(worker, child);
        self.set(worker, WorkerState::Starting);
        self.awaiting_join.insert(worker, joins_before);
        Ok(())
    }

    /// Starts a replacement for `worker` (neither slowed down nor corrupted: the fault was the
    /// first process).
    pub fn replace(&mut self, worker: u32, progress: &Progress) -> Result<(), LocalError> {
        *self.incarnations.entry(worker).or_default() += 1;
        let launch = WorkerLaunch {
            worker,
            ..self.launch.clone()
        };
        self.spawn(launch, joins(progress, worker))
    }

    /// Sends SIGKILL to `worker` and waits until its process is gone (so that the next
    /// [`Fleet::reap`] sees it); says whether it had a process.
    pub async fn kill(&mut self, worker: u32) -> bool {
        match self.children.get_mut(&worker) {
            Some(child) => {
                let _ = child.kill().await;
                true
            }
            None => false,
        }
    }

    /// The log of `worker`'s latest process.
    pub fn log_path(&self, worker: u32) -> PathBuf {
        let incarnation = self.incarnations.get(&worker).copied().unwrap_or_default();
        self.logs
            .join(format!("{}.log", worker_log_name(worker, incarnation)))
    }

    /// Kills every worker process and waits until each is gone.
    pub async fn stop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill().await;
        }
    }

    pub fn set(&mut self, worker: u32, state: WorkerState) {
        if let Some(slot) = usize::try_from(worker).ok().and_then(|w| self.states.get_mut(w)) {
            *slot = state;
        }
    }

    pub fn states(&self) -> &[WorkerState] {
        &self.states
    }

    /// Workers with a process started (joined or not) or finished cleanly: the live workers
    /// for the coverage check.
    pub fn running(&self) -> BTreeSet<u32> {
        (0u32..)
            .zip(&self.states)
            .filter(|(_, s)| !matches!(s, WorkerState::Missing | WorkerState::Failed))
            .map(|(w, _)| w)
            .collect()
    }

    /// Workers whose join count grew since they were started (they are no longer awaited).
    pub fn joined(&mut self, progress: &Progress) -> Vec<u32> {
        let joined: Vec<u32> = self
            .awaiting_join
            .iter()
            .filter(|&(&w, &before)| joins(progress, w) > before)
            .map(|(&w, _)| w)
            .collect();
        for w in &joined {
            self.awaiting_join.remove(w);
        }
        joined
    }

    /// Collects the processes that ended: clean exits become [`WorkerState::Exited`]; returns
    /// the workers that died (their state is for the caller to set).
    pub fn reap(&mut self) -> Vec<u32> {
        let ended: Vec<(u32, bool)> = self
            .children
            .iter_mut()
            .filter_map(|(&w, c)| c.try_wait().ok().flatten().map(|s| (w, s.success())))
            .collect();
        let mut died = Vec::new();
        for (w, clean) in ended {
            self.children.remove(&w);
            self.awaiting_join.remove(&w);
            if clean {
                self.set(w, WorkerState::Exited);
            } else {
                died.push(w);
            }
        }
        died
    }

    /// Workers leave on their own once told training finished; makes sure of it.
    pub async fn finish(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// How often `worker` has joined the server.
fn joins(progress: &Progress, worker: u32) -> u64 {
    progress
        .workers
        .iter()
        .find(|w| w.worker == worker)
        .map_or(0, |w| w.joins)
}

/// The environment a worker starts with: its emulated node's, then the reproducible profile
/// over it. The worker would apply the profile itself by executing itself again, which loads
/// libtorch twice (about 0.3 s alone, over 1 s on a busy small machine) and delays every
/// replacement; a launcher that sets it spares that.
fn worker_env(node: Option<Capability>, numerics: Numerics) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = node.map(Capability::env).into_iter().flatten().collect();
    if numerics == Numerics::Reproducible {
        env.extend(REPRODUCIBLE_ENV);
    }
    env
}

//! The worker processes of a local run, and what the supervisor sees of each: the
//! [`WorkerState`] the healing policy ([`anyk_core::heal`]) decides on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyk_core::WorkerState;
use anyk_proto::launch::WorkerLaunch;
use anyk_proto::v1::Progress;
use tokio::process::Child;

use super::processes::start_worker;
use super::{Faults, LocalError};

pub struct Fleet {
    bin: PathBuf,
    logs: PathBuf,
    /// How every worker is started; the id and straggle factor are set per start.
    launch: WorkerLaunch,
    children: BTreeMap<u32, Child>,
    incarnations: BTreeMap<u32, u32>,
    /// `states[w]` is what the supervisor saw of worker w.
    states: Vec<WorkerState>,
    /// Workers started but not yet seen joining, with the server's join count for their id when
    /// they were started: a worker is Ready once that count grows.
    awaiting_join: BTreeMap<u32, u64>,
}

impl Fleet {
    /// Starts workers 0..n, slowed down as `faults` say.
    pub fn start(
        bin: PathBuf,
        logs: PathBuf,
        launch: WorkerLaunch,
        workers: u32,
        faults: &Faults,
    ) -> Result<Self, LocalError> {
        let mut fleet = Self {
            bin,
            logs,
            launch,
            children: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            states: (0..workers).map(|_| WorkerState::Missing).collect(),
            awaiting_join: BTreeMap::new(),
        };
        for w in 0..workers {
            // The server is fresh: no worker has joined yet.
            fleet.spawn(w, faults.straggle_factor(w), 0)?;
        }
        Ok(fleet)
    }

    fn spawn(&mut self, worker: u32, straggle: f64, joins_before: u64) -> Result<(), LocalError> {
        let incarnation = self.incarnations.get(&worker).copied().unwrap_or_default();
        let launch = WorkerLaunch {
            worker,
            straggle,
            ..self.launch.clone()
        };
        let child = start_worker(&self.bin, &launch, incarnation, &self.logs)?;
        self.children.insert(worker, child);
        self.set(worker, WorkerState::Starting);
        self.awaiting_join.insert(worker, joins_before);
        Ok(())
    }

    /// Starts a replacement for `worker` (not slowed down: the fault was the first process).
    pub fn replace(&mut self, worker: u32, progress: &Progress) -> Result<(), LocalError> {
        *self.incarnations.entry(worker).or_default() += 1;
        self.spawn(worker, 1.0, joins(progress, worker))
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

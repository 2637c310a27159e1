//! When `anyk local` gives up: a worker that keeps failing is replaced after a growing delay,
//! and the job fails once replacements within a window exceed the backoff limit, or once it
//! runs past its deadline. Every replacement counts: of crashed, killed (`--kill`) and faulty
//! workers alike.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The delay before a worker's first replacement; doubled for each failure since it last
/// joined the server.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay before a replacement.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The job-level limits (`--backoff-limit`, `--backoff-window-seconds`, `--deadline-seconds`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub backoff_limit: u32,
    pub window: Duration,
    pub deadline: Option<Duration>,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error(
        "backoff limit reached: worker {worker} failed after {replaced} replacement(s) within \
         {window_s} s (--backoff-limit {limit}); its log {} says: {first_error}",
        log.display()
    )]
    BackoffLimit {
        worker: u32,
        replaced: usize,
        window_s: u64,
        limit: u32,
        log: PathBuf,
        first_error: String,
    },
    #[error("deadline exceeded: the job ran longer than --deadline-seconds {0}")]
    Deadline(u64),
}

/// Replacements made and due.
pub struct Replacements {
    limits: Limits,
    started: Instant,
    /// When each replacement within the window was decided, oldest first.
    recent: VecDeque<Instant>,
    /// Failures of each worker since it last joined.
    failures: BTreeMap<u32, u32>,
    /// Workers to replace, and when.
    due: BTreeMap<u32, Instant>,
}

impl Replacements {
    pub fn new(limits: Limits, started: Instant) -> Self {
        Self {
            limits,
            started,
            recent: VecDeque::new(),
            failures: BTreeMap::new(),
            due: BTreeMap::new(),
        }
    }

    /// `worker`'s process died at `now`: schedules its replacement after its backoff, or says
    /// (with the number of replacements in the window) that the backoff limit is reached.
    pub fn failed(&mut self, worker: u32, now: Instant) -> Result<Duration, usize> {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.limits.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limits.backoff_limit as usize {
            return Err(self.recent.len());
        }
        self.recent.push_back(now);
        let failures = self.failures.entry(worker).or_default();
        *failures += 1;
        let delay = backoff(*failures);
        self.due.insert(worker, now + delay);
        Ok(delay)
    }

    /// `worker` joined the server: its next failure starts the backoff over.
    pub fn joined(&mut self, worker: u32) {
        self.failures.remove(&worker);
    }

    /// Workers whose replacement is due at `now` (no longer scheduled).
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let due: Vec<u32> = self
            .due
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&w, _)| w)
            .collect();
        for w in &due {
            self.due.remove(w);
        }
        due
    }

    pub fn check_deadline(&self, now: Instant) -> Result<(), JobFailure> {
        match self.limits.deadline {
            Some(deadline) if now.duration_since(self.started) > deadline => {
                Err(JobFailure::Deadline(deadline.as_secs()))
            }
            _ => Ok(()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// The failure of a job whose `worker` died once more with `replaced` replacements in the
/// window: names the line of its log (`log`) that says why.
pub fn backoff_failure(limits: Limits, worker: u32, replaced: usize, log: PathBuf) -> JobFailure {
    let first_error = match std::fs::read_to_string(&log) {
        Ok(text) => first_error(&text),
        Err(err) => format!("(its log cannot be read: {err})"),
    };
    JobFailure::BackoffLimit {
        worker,
        replaced,
        window_s: limits.window.as_secs(),
        limit: limits.backoff_limit,
        log,
        first_error,
    }
}

/// The delay before the replacement that follows a worker's `failures`-th failure (from 1).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// The longest error line quoted, in characters.
const QUOTED: usize = 300;

/// The line of a log that says why a process failed: the first one that mentions an error,
/// else the last non-empty one (a process may die without saying so). Cut at an escaped line
/// break (a debug-printed error carries its backtrace on one line) and at [`QUOTED`] characters.
pub fn first_error(log: &str) -> String {
    let lines = || log.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("panicked")
        })
        .or_else(|| lines().next_back())
        .unwrap_or("(its log is empty)");
    let line = line.split("\\n").next().unwrap_or(line);
    match line.char_indices().nth(QUOTED) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(backoff_limit: u32) -> Limits {
        Limits {
            backoff_limit,
            window: Duration::from_secs(60),
            deadline: Some(Duration::from_secs(100)),
        }
    }

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_ten() {
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn replacements_back_off_until_the_worker_joins() {
        let t0 = Instant::now();
        let mut r = Replacements::new(limits(10), t0);
        assert_eq!(r.failed(3, t0), Ok(FIRST_BACKOFF));
        assert!(r.take_due(t0).is_empty());
        assert_eq!(r.take_due(t0 + FIRST_BACKOFF), [3]);
        assert!(r.take_due(t0 + FIRST_BACKOFF).is_empty(), "taken once");
        assert_eq!(r.failed(3, t0), Ok(2 * FIRST_BACKOFF));
        r.joined(3);
        assert_eq!(r.failed(3, t0), Ok(FIRST_BACKOFF));
    }

    #[test]
    fn the_limit_counts_replacements_within_the_window() {
        let t0 = Instant::now();
        let mut r = Replacements::new(limits(2), t0);
        assert!(r.failed(0, t0).is_ok());
        assert!(r.failed(1, t0 + Duration::from_secs(30)).is_ok());
        assert_eq!(r.failed(2, t0 + Duration::from_secs(40)), Err(2));
        // The first one left the window.
        assert!(r.failed(2, t0 + Duration::from_secs(61)).is_ok());
        assert_eq!(r.failed(0, t0 + Duration::from_secs(62)), Err(2));
        assert!(r.check_deadline(t0 + Duration::from_secs(100)).is_ok());
        let late = r.check_deadline(t0 + Duration::from_secs(101)).unwrap_err();
        assert!(late.to_string().contains("--deadline-seconds 100"), "{late}");
    }

    #[test]
    fn the_first_error_line_is_found() {
        let log = "loading\nError: failed to load model /x.pt\n  caused by: no such file\n";
        assert_eq!(first_error(log), "Error: failed to load model /x.pt");
        assert_eq!(first_error("starting\nkilled\n\n"), "killed");
        assert_eq!(first_error(""), "(its log is empty)");
        let debug = r#"Error: Load { path: "/x.pt", source: Torch("no such file\nframe #0: c10") }"#;
        assert_eq!(
            first_error(debug),
            r#"Error: Load { path: "/x.pt", source: Torch("no such file"#
        );
        let long = format!("error: {}", "x".repeat(1000));
        assert_eq!(first_error(&long).chars().count(), QUOTED + 3);
    }
}

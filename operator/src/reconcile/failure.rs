//! The failure policy, pure: replacements back off per pod, too many within the window fail the
//! job, and so does running past `activeDeadlineSeconds`. Without it a pod that can never start
//! (a bad image, a model that does not load) would be replaced as fast as it fails, forever.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{PodReplacement, TrainingJob, TrainingJobStatus};

/// Replacements count against `backoffLimit` for this long.
pub const WINDOW: Duration = Duration::from_secs(600);
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Reasons of a Failed condition after which nothing is healed any more.
pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// The server refused a step that would have made the parameters non-finite: no replacement
/// can fix that, the same step would fail again.
pub const NON_FINITE: &str = "NonFinite";

/// Whether the job failed for good (not for a spec the user may still fix).
pub fn failed_for_good(status: &TrainingJobStatus) -> bool {
    status.conditions.iter().any(|c| {
        c.type_ == "Failed"
            && c.status == "True"
            && [BACKOFF_LIMIT_EXCEEDED, DEADLINE_EXCEEDED, NON_FINITE].contains(&c.reason.as_str())
    })
}

/// The replacements still in the window at `now`, and `replaced` added at `now`.
pub fn history(previous: &[PodReplacement], replaced: &[String], now: Timestamp) -> Vec<PodReplacement> {
    let recent = previous
        .iter()
        .filter(|r| age(r, now).is_some_and(|age| age < WINDOW));
    recent
        .cloned()
        .chain(replaced.iter().map(|pod| PodReplacement {
            pod: pod.clone(),
            time: now.to_string(),
        }))
        .collect()
}

/// How long `pod` must still wait before it is created again, given the replacements in the
/// window: a first replacement at once (healing is what the job is for), then 1 s after the
/// second, doubling with each further one, at most 60 s.
pub fn wait_before_creating(pod: &str, history: &[PodReplacement], now: Timestamp) -> Option<Duration> {
    let mine: Vec<&PodReplacement> = history.iter().filter(|r| r.pod == pod).collect();
    let last = mine.last()?;
    if mine.len() < 2 {
        return None;
    }
    let exponent = u32::try_from(mine.len() - 2).unwrap_or(u32::MAX).min(6);
    let delay = FIRST_DELAY.saturating_mul(1 << exponent).min(MAX_DELAY);
    let waited = age(last, now).unwrap_or_default();
    delay.checked_sub(waited).filter(|left| !left.is_zero())
}

/// Why the job fails now, if it does: too many replacements, or past its deadline.
pub fn verdict(
    job: &TrainingJob,
    status: &TrainingJobStatus,
    history: &[PodReplacement],
    now: Timestamp,
) -> Option<(&'static str, String)> {
    let limit = job.spec.backoff_limit;
    if history.len() > limit as usize {
        let message = format!(
            "{} pod replacements in the last {} minutes exceed backoffLimit {limit}",
            history.len(),
            WINDOW.as_secs() / 60
        );
        return Some((BACKOFF_LIMIT_EXCEEDED, message));
    }
    let deadline = job.spec.active_deadline_seconds?;
    let started = status.start_time.as_deref()?.parse::<Timestamp>().ok()?;
    let ran = now.duration_since(started).as_secs();
    (ran >= deadline).then(|| {
        let message = format!("the job ran {ran}s, past activeDeadlineSeconds {deadline}");
        (DEADLINE_EXCEEDED, message)
    })
}

fn age(replacement: &PodReplacement, now: Timestamp) -> Option<Duration> {
    let at = replacement.time.parse::<Timestamp>().ok()?;
    Duration::try_from(now.duration_since(at)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn replaced(pod: &str, secs: i64) -> PodReplacement {
        PodReplacement {
            pod: pod.into(),
            time: at(secs).to_string(),
        }
    }

    #[test]
    fn the_window_forgets_old_replacements() {
        let old = [replaced("w-1", 0), replaced("w-2", 500)];
        let now = history(&old, &["w-3".into()], at(700));
        assert_eq!(now, [replaced("w-2", 500), replaced("w-3", 700)]);
    }

    #[test]
    fn replacements_of_one_pod_back_off_exponentially() {
        let wait = |h: &[PodReplacement], pod: &str, now| wait_before_creating(pod, h, at(now));
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            wait(&[replaced("w-1", 0)], "w-1", 0),
            None,
            "the first replacement at once"
        );
        let twice = [replaced("w-1", 0), replaced("w-1", 5)];
        assert_eq!(wait(&twice, "w-1", 5), secs(1));
        assert_eq!(wait(&twice, "w-1", 6), None);
        assert_eq!(wait(&twice, "w-2", 5), None, "other pods do not wait");
        let thrice = [replaced("w-1", 0), replaced("w-1", 10), replaced("w-1", 20)];
        assert_eq!(wait(&thrice, "w-1", 21), secs(1));
        let many: Vec<_> = (0..12).map(|i| replaced("w-1", i)).collect();
        assert_eq!(wait(&many, "w-1", 11), secs(60), "capped");
    }
}

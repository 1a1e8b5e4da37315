//! When to ask PVE again whether a task is done.
//!
//! A task of a type (`qmcreate`, `qmconfig`, `qmclone`, ...) that lately
//! took [`LONG_TASK`] or more is first asked about when it should be done,
//! so a 200 ms task costs one ask instead of an immediate one that finds it
//! running and another. Other tasks are asked about at once (quick ones are
//! often done by then) and, if still running, again when tasks of their type
//! took to finish lately. After that every 50 ms, doubling up to a second.
//! The estimate follows what is seen: done at the ask it placed, it shrinks
//! a little (the task may be quicker still); done later, it becomes the time
//! it took.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST_UNKNOWN: Duration = Duration::from_millis(25);
const MIN_PAUSE: Duration = Duration::from_millis(10);
const STEP: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Tasks that took at least this long lately are not asked about at once.
pub const LONG_TASK: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct TaskPace {
    estimates: Mutex<HashMap<String, Duration>>,
}

impl TaskPace {
    /// How long to wait before the first ask about a task of `task_type`:
    /// its estimate when that is [`LONG_TASK`] or more, else nothing.
    pub fn initial_wait(&self, task_type: &str) -> Duration {
        let est = self
            .estimates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_type)
            .copied();
        match est {
            Some(e) if e >= LONG_TASK => e.min(MAX_PAUSE),
            _ => Duration::ZERO,
        }
    }

    /// The pause after the immediate ask found the task running, `elapsed`
    /// after it was started.
    pub fn first_pause(&self, task_type: &str, elapsed: Duration) -> Duration {
        let est = self
            .estimates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_type)
            .copied();
        match est {
            Some(e) => e.saturating_sub(elapsed).clamp(MIN_PAUSE, MAX_PAUSE),
            None => FIRST_UNKNOWN,
        }
    }

    /// The pause after the one taken (`None`: the first, from the
    /// estimate) when the task still ran: 50 ms, then doubling to a second.
    pub fn next_pause(previous: Option<Duration>) -> Duration {
        match previous {
            None => STEP,
            Some(p) => (p * 2).clamp(STEP, MAX_PAUSE),
        }
    }

    /// A task of `task_type` was seen done `took` after its start, at ask
    /// number `asks`; `waited`: the first ask came after [`Self::initial_wait`]
    /// (else it was immediate).
    pub fn learn(&self, task_type: &str, took: Duration, asks: u32, waited: bool) {
        let mut est = self.estimates.lock().unwrap_or_else(|p| p.into_inner());
        match (waited, asks, est.get(task_type).copied()) {
            // Done when the estimate said: perhaps it is quicker still.
            (true, 1, Some(e)) => {
                est.insert(task_type.to_string(), e.mul_f64(0.95).max(MIN_PAUSE));
            }
            // Done at the immediate ask: nothing to learn.
            (false, 1, _) => {}
            (false, 2, Some(e)) => {
                est.insert(task_type.to_string(), e.mul_f64(0.9).max(MIN_PAUSE));
            }
            _ => {
                est.insert(task_type.to_string(), took.min(MAX_PAUSE));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_follow_what_tasks_took() {
        let p = TaskPace::default();
        assert_eq!(p.first_pause("qmcreate", Duration::ZERO), FIRST_UNKNOWN);
        // Seen done at the fourth ask, 230 ms after the start.
        p.learn("qmcreate", Duration::from_millis(230), 4, false);
        assert_eq!(
            p.first_pause("qmcreate", Duration::from_millis(20)),
            Duration::from_millis(210)
        );
        // Done at the ask the estimate placed: it shrinks.
        p.learn("qmcreate", Duration::from_millis(231), 2, false);
        assert_eq!(
            p.first_pause("qmcreate", Duration::ZERO),
            Duration::from_millis(207)
        );
        // Other task types keep their own.
        assert_eq!(p.first_pause("qmconfig", Duration::ZERO), FIRST_UNKNOWN);
        // Done at once: nothing learnt.
        p.learn("qmconfig", Duration::from_millis(3), 1, false);
        assert_eq!(p.first_pause("qmconfig", Duration::ZERO), FIRST_UNKNOWN);
        assert_eq!(TaskPace::next_pause(None), STEP);
        assert_eq!(TaskPace::next_pause(Some(STEP)), 2 * STEP);
        assert_eq!(
            TaskPace::next_pause(Some(Duration::from_millis(600))),
            MAX_PAUSE
        );
    }

    #[test]
    fn long_tasks_are_first_asked_about_when_they_should_be_done() {
        let p = TaskPace::default();
        assert_eq!(
            p.initial_wait("qmclone"),
            Duration::ZERO,
            "unknown: at once"
        );
        // Seen done at the third ask, 220 ms in.
        p.learn("qmclone", Duration::from_millis(220), 3, false);
        assert_eq!(p.initial_wait("qmclone"), Duration::from_millis(220));
        // Done at that one ask: the estimate shrinks a little.
        p.learn("qmclone", Duration::from_millis(221), 1, true);
        assert_eq!(p.initial_wait("qmclone"), Duration::from_millis(209));
        // Too early this time (done at the second ask): it becomes what it took.
        p.learn("qmclone", Duration::from_millis(260), 2, true);
        assert_eq!(p.initial_wait("qmclone"), Duration::from_millis(260));
        // Short tasks stay asked about at once.
        p.learn("qmconfig", Duration::from_millis(30), 3, false);
        assert_eq!(p.initial_wait("qmconfig"), Duration::ZERO);
        assert_eq!(
            p.first_pause("qmconfig", Duration::ZERO),
            Duration::from_millis(30)
        );
    }
}

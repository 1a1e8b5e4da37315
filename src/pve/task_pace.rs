//! When to ask PVE again whether a task is done.
//!
//! A task is asked about at once (quick ones are often done by then). If it
//! still runs, the next ask comes when tasks of its type (`qmcreate`,
//! `qmconfig`, `qmclone`, ...) took to finish lately, so a 200 ms task is
//! seen done at about 200 ms instead of at the next step of a fixed back-off,
//! then every 50 ms, doubling up to a second. The estimate follows what is
//! seen: done at the first ask after it, it shrinks a little (the task may
//! be quicker still); done later, it becomes the time it took.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST_UNKNOWN: Duration = Duration::from_millis(25);
const MIN_PAUSE: Duration = Duration::from_millis(10);
const STEP: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct TaskPace {
    estimates: Mutex<HashMap<String, Duration>>,
}

impl TaskPace {
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
    /// number `asks` (1 = the immediate one).
    pub fn learn(&self, task_type: &str, took: Duration, asks: u32) {
        let mut est = self.estimates.lock().unwrap_or_else(|p| p.into_inner());
        match (asks, est.get(task_type).copied()) {
            (1, _) => {}
            (2, Some(e)) => {
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
        p.learn("qmcreate", Duration::from_millis(230), 4);
        assert_eq!(
            p.first_pause("qmcreate", Duration::from_millis(20)),
            Duration::from_millis(210)
        );
        // Done at the ask the estimate placed: it shrinks.
        p.learn("qmcreate", Duration::from_millis(231), 2);
        assert_eq!(
            p.first_pause("qmcreate", Duration::ZERO),
            Duration::from_millis(207)
        );
        // Other task types keep their own.
        assert_eq!(p.first_pause("qmconfig", Duration::ZERO), FIRST_UNKNOWN);
        // Done at once: nothing learnt.
        p.learn("qmconfig", Duration::from_millis(3), 1);
        assert_eq!(p.first_pause("qmconfig", Duration::ZERO), FIRST_UNKNOWN);
        assert_eq!(TaskPace::next_pause(None), STEP);
        assert_eq!(TaskPace::next_pause(Some(STEP)), 2 * STEP);
        assert_eq!(
            TaskPace::next_pause(Some(Duration::from_millis(600))),
            MAX_PAUSE
        );
    }
}

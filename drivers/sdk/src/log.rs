//! Rate-limited warnings for what peers send: a flood of bad frames must not flood the log
//! (STYLE: bad input gets a rate-limited log line and a counter).

use std::time::Duration;

use tokio::time::Instant;

/// At most one line per window; the lines held back are counted, and the next line that
/// may be written says how many there were.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing one line per `window`.
    pub fn new(window: Duration) -> LogLimiter {
        LogLimiter {
            window,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now; `None`
    /// (and one more held back) otherwise.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.window);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_window_and_the_next_says_how_many_were_held_back() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(l.allow(), Some(2));
        assert_eq!(l.allow(), None);
    }
}

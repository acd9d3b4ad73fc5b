//! Error classes and the one retry helper every crate uses (jittered exponential backoff).

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry later: the same call may succeed (network, timeouts, throttling, 5xx).
    Transient,
    /// This input is bad and will stay bad (conversion, constraint, malformed file); retrying
    /// cannot help, but other work can go on.
    Definite,
    /// The process cannot do its job (configuration, permissions, incompatible data); stop with
    /// a clear report.
    Fatal,
}

/// Errors that know their [`ErrorClass`].
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// How long to wait between attempts, and how many to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Growth of the delay per attempt.
    pub multiplier: u32,
    /// Total attempts, counting the first; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2,
            max_attempts: Some(8),
        }
    }
}

impl Backoff {
    /// Retries forever (the writer's policy for transient MySQL errors, DESIGN §6.9).
    pub fn forever(self) -> Self {
        Self {
            max_attempts: None,
            ..self
        }
    }

    /// The delay before retry number `retry` (0-based): a random value between half and all of
    /// `initial * multiplier^retry`, capped at `max` ("equal jitter").
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = self.multiplier.saturating_pow(retry);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        let jitter =
            rand::rng().random_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_micros(jitter)
    }
}

/// Runs `op` until it succeeds, fails with an error that is not [`ErrorClass::Transient`], or
/// runs out of attempts; `on_retry` sees each transient error and the delay before the next try
/// (for logs and retry counters). Returns the last error.
pub async fn with_backoff<T, E, F, Fut>(
    policy: Backoff,
    mut on_retry: impl FnMut(&E, Duration),
    mut op: F,
) -> Result<T, E>
where
    E: Classify,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt: u32 = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) => {
                attempt = attempt.saturating_add(1);
                let exhausted = policy.max_attempts.is_some_and(|max| attempt >= max);
                if err.class() != ErrorClass::Transient || exhausted {
                    return Err(err);
                }
                let delay = policy.delay(attempt - 1);
                on_retry(&err, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    struct Failure(ErrorClass);
    impl Classify for Failure {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    fn quick(max_attempts: Option<u32>) -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            multiplier: 2,
            max_attempts,
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let calls = Cell::new(0);
        let retries = Cell::new(0);
        let result = with_backoff(
            quick(Some(10)),
            |_, _| retries.set(retries.get() + 1),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 4 {
                        Err(Failure(ErrorClass::Transient))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result, Ok(4));
        assert_eq!(retries.get(), 3);
    }

    #[tokio::test]
    async fn stops_at_once_on_definite_and_fatal_errors() {
        for class in [ErrorClass::Definite, ErrorClass::Fatal] {
            let calls = Cell::new(0);
            let result: Result<(), _> = with_backoff(
                quick(None),
                |_, _| {},
                || {
                    calls.set(calls.get() + 1);
                    async move { Err(Failure(class)) }
                },
            )
            .await;
            assert_eq!(result, Err(Failure(class)));
            assert_eq!(calls.get(), 1);
        }
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let calls = Cell::new(0);
        let result: Result<(), _> = with_backoff(
            quick(Some(3)),
            |_, _| {},
            || {
                calls.set(calls.get() + 1);
                async move { Err(Failure(ErrorClass::Transient)) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let policy = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2,
            max_attempts: None,
        };
        for retry in 0..40 {
            let ceiling = (Duration::from_millis(100) * 2u32.saturating_pow(retry)).min(policy.max);
            let d = policy.delay(retry);
            assert!(d >= ceiling / 2 && d <= ceiling, "retry {retry}: {d:?}");
        }
    }
}

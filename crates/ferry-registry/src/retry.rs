//! Which failures are retried, and how long to wait before the next try:
//! the one retry policy of ferry's HTTP clients (the registry client, and
//! the file server / WebDAV target in ferry-import).

use std::error::Error as _;
use std::time::{Duration, SystemTime};

/// 429 and the transient 5xx answers.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Connection errors, timeouts and bodies cut short are retryable; a request
/// that could not be built, a redirect loop or a refused certificate is not.
pub fn is_retryable_transport(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() || e.is_status() {
        return false;
    }
    // A certificate problem will not go away by trying again.
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") {
            return false;
        }
        src = s.source();
    }
    true
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before try `attempt + 1` after try `attempt` (1-based) failed:
/// `initial * 2^(attempt-1)`, capped at `max`, with jitter in its upper half.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = initial.saturating_mul(1u32 << exp).min(max);
    let jitter: f64 = rand::random::<f64>();
    full.mul_f64(0.5 + 0.5 * jitter)
}

/// The delay to honour: `Retry-After` when the registry sent one (capped at
/// `max`), else the exponential backoff.
pub fn delay(
    initial: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    match retry_after {
        Some(d) => d.min(max),
        None => backoff(initial, max, attempt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        for _ in 0..50 {
            let d1 = backoff(i, m, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= i, "{d1:?}");
            let d3 = backoff(i, m, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d10 = backoff(i, m, 10);
            assert!(d10 >= Duration::from_millis(500) && d10 <= m);
            assert!(backoff(i, m, u32::MAX) <= m);
        }
    }

    #[test]
    fn retry_after_is_capped_at_the_maximum_backoff() {
        let d = delay(
            Duration::from_millis(100),
            Duration::from_secs(5),
            1,
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(d, Duration::from_secs(5));
    }
}

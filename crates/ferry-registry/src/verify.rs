//! A byte stream that checks size and digest as the bytes flow.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::{Digest, Hasher};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::Error;

type Inner = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// Wraps a blob body: passes the bytes through, hashing them; yields an error
/// as soon as more than `expected_size` bytes arrive, and at the end if the
/// size or digest differs; yields a timeout error if no bytes arrive for
/// `stall` (when given). After an error the stream ends.
pub(crate) struct VerifyingStream {
    inner: Inner,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: Option<u64>,
    url: String,
    stall: Option<(Duration, Pin<Box<Sleep>>)>,
    done: bool,
}

impl VerifyingStream {
    /// Wraps `inner`, which came from `url`.
    pub(crate) fn new(
        inner: Inner,
        url: String,
        expected: Digest,
        expected_size: Option<u64>,
        stall: Option<Duration>,
    ) -> VerifyingStream {
        VerifyingStream {
            inner,
            hasher: Some(Hasher::new()),
            expected,
            expected_size,
            url,
            stall: stall.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            done: false,
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for VerifyingStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((d, sleep)) = &mut this.stall {
                    sleep.as_mut().reset(Instant::now() + *d);
                }
                let Some(hasher) = this.hasher.as_mut() else {
                    return this.fail(Error::InvalidResponse {
                        method: "GET".into(),
                        url: this.url.clone(),
                        reason: "the body stream was polled after it ended".into(),
                    });
                };
                hasher.update(&chunk);
                let seen = hasher.len();
                if let Some(size) = this.expected_size {
                    if seen > size {
                        let e = Error::SizeMismatch {
                            url: this.url.clone(),
                            expected: size,
                            actual: seen,
                            at_least: true,
                        };
                        return this.fail(e);
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e),
            Poll::Ready(None) => {
                this.done = true;
                let Some(hasher) = this.hasher.take() else {
                    return Poll::Ready(None);
                };
                let seen = hasher.len();
                if let Some(size) = this.expected_size {
                    if seen != size {
                        return Poll::Ready(Some(Err(Error::SizeMismatch {
                            url: this.url.clone(),
                            expected: size,
                            actual: seen,
                            at_least: false,
                        })));
                    }
                }
                let actual = hasher.finish();
                if actual != this.expected {
                    return Poll::Ready(Some(Err(Error::DigestMismatch {
                        url: this.url.clone(),
                        expected: this.expected.clone(),
                        actual,
                    })));
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((d, sleep)) = &mut this.stall {
                    if sleep.as_mut().poll(cx).is_ready() {
                        let e = Error::Timeout {
                            method: "GET".into(),
                            url: this.url.clone(),
                            after: *d,
                        };
                        return this.fail(e);
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};

    fn wrap(chunks: Vec<&'static [u8]>, digest: Digest, size: Option<u64>) -> VerifyingStream {
        let inner = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        VerifyingStream::new(
            Box::pin(inner),
            "http://r/v2/a/blobs/x".into(),
            digest,
            size,
            None,
        )
    }

    async fn collect(s: VerifyingStream) -> (Vec<u8>, Vec<Error>) {
        let items: Vec<Result<Bytes, Error>> = s.collect().await;
        let mut data = Vec::new();
        let mut errs = Vec::new();
        for i in items {
            match i {
                Ok(b) => data.extend_from_slice(&b),
                Err(e) => errs.push(e),
            }
        }
        (data, errs)
    }

    #[tokio::test]
    async fn matching_content_passes_through_unchanged() {
        let d = Digest::of(b"hello world");
        let (data, errs) = collect(wrap(vec![b"hello ", b"world"], d, Some(11))).await;
        assert_eq!(data, b"hello world");
        assert!(errs.is_empty());
    }

    #[tokio::test]
    async fn wrong_content_ends_with_a_digest_mismatch_naming_both_digests() {
        let expected = Digest::of(b"hello world");
        let (data, errs) = collect(wrap(vec![b"hello ", b"WORLD"], expected.clone(), None)).await;
        assert_eq!(data, b"hello WORLD");
        assert_eq!(errs.len(), 1);
        match &errs[0] {
            Error::DigestMismatch {
                expected: e,
                actual,
                url,
            } => {
                assert_eq!(e, &expected);
                assert_eq!(actual, &Digest::of(b"hello WORLD"));
                assert!(url.contains("/v2/a/blobs/"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = errs[0].to_string();
        assert!(
            msg.contains(&expected.to_string())
                && msg.contains(&Digest::of(b"hello WORLD").to_string())
        );
    }

    #[tokio::test]
    async fn too_many_bytes_fail_as_soon_as_the_size_is_exceeded() {
        let d = Digest::of(b"abc");
        let (data, errs) = collect(wrap(vec![b"ab", b"cd", b"never read"], d, Some(3))).await;
        assert_eq!(data, b"ab", "the chunk that overflows is not passed on");
        assert!(matches!(
            errs.as_slice(),
            [Error::SizeMismatch {
                expected: 3,
                actual: 4,
                at_least: true,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn a_short_body_fails_at_the_end_with_the_sizes() {
        let d = Digest::of(b"abc");
        let (_, errs) = collect(wrap(vec![b"ab"], d, Some(3))).await;
        assert!(matches!(
            errs.as_slice(),
            [Error::SizeMismatch {
                expected: 3,
                actual: 2,
                at_least: false,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn an_error_from_the_body_is_passed_on_and_ends_the_stream() {
        let items: Vec<Result<Bytes, Error>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(Error::Timeout {
                method: "GET".into(),
                url: "u".into(),
                after: Duration::from_secs(1),
            }),
            Ok(Bytes::from_static(b"b")),
        ];
        let s = VerifyingStream::new(
            Box::pin(stream::iter(items)),
            "u".into(),
            Digest::of(b"ab"),
            None,
            None,
        );
        let (data, errs) = collect(s).await;
        assert_eq!(data, b"a");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].is_retryable());
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let inner = stream::iter(vec![Ok(Bytes::from_static(b"a"))]).chain(stream::pending());
        let s = VerifyingStream::new(
            Box::pin(inner),
            "u".into(),
            Digest::of(b"a"),
            None,
            Some(Duration::from_millis(50)),
        );
        let (data, errs) = collect(s).await;
        assert_eq!(data, b"a");
        assert!(matches!(errs.as_slice(), [Error::Timeout { .. }]));
    }
}

//! A blocking reader over a GetObject body that survives a broken connection.
//!
//! When the body fails mid-stream (a reset, a stall, a body shorter than the
//! response announced), the reader asks again for the rest only, `Range:
//! bytes=N-`, with `If-Match:` the ETag of the first response: a replaced object
//! is refused by the service (412) and checked again here, so bytes of two
//! versions are never spliced. It tries a bounded number of times (the SDK's
//! `max_attempts`, i.e. `AWS_MAX_ATTEMPTS`, default 3, counted afresh after each
//! resumed request that delivers bytes), with backoff, and then fails with a
//! transient error. Each resumed request is itself an SDK call, which the SDK
//! retries as any other when it cannot be sent or gets a 5xx: those retries come
//! on top of the resumes counted here. What the bytes must hash to is checked
//! above this reader, as for any store.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tokio::runtime::Runtime;

use crate::exit::{coded, to_io, Code};

/// How long a body may deliver nothing before the connection counts as broken.
const STALL: Duration = Duration::from_secs(120);
/// Resumes of one object in all, however many bytes each delivers.
const MAX_RESUMES: u32 = 100;

pub(super) struct S3Reader {
    rt: Arc<Runtime>,
    client: Client,
    bucket: String,
    full_key: String,
    /// `s3://bucket/key`, for messages.
    what: String,
    body: ByteStream,
    chunk: bytes::Bytes,
    /// The ETag of the first response: every resumed request must match it.
    etag: Option<String>,
    /// Offset in the object of the next byte to deliver.
    next: u64,
    /// Offset one past the last byte asked for, when the response said.
    end: Option<u64>,
    /// Resumes left before the read fails, counted afresh after progress.
    tries_left: u32,
    resumes: u32,
}

/// `bytes first-last/total` → (first, last + 1).
fn content_range(v: &str) -> Option<(u64, u64)> {
    let (span, _total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.parse().ok()?, b.parse::<u64>().ok()? + 1))
}

impl S3Reader {
    pub(super) fn new(
        rt: Arc<Runtime>,
        client: Client,
        bucket: &str,
        full_key: &str,
        what: String,
        out: GetObjectOutput,
    ) -> S3Reader {
        let (next, end) = match out.content_range().and_then(content_range) {
            Some((a, b)) => (a, Some(b)),
            None => (0, out.content_length().and_then(|n| u64::try_from(n).ok())),
        };
        let tries = max_tries(&client);
        S3Reader {
            rt,
            client,
            bucket: bucket.to_string(),
            full_key: full_key.to_string(),
            what,
            etag: out.e_tag().map(str::to_string),
            body: out.body,
            chunk: bytes::Bytes::new(),
            next,
            end,
            tries_left: tries,
            resumes: 0,
        }
    }

    fn fail(&self, code: Code, message: String) -> io::Error {
        to_io(coded(code, message))
    }

    /// After the body broke with `cause`: a new body from `next` on, of the same
    /// object version, or the error to give up with.
    fn resume(&mut self, mut cause: String) -> io::Result<()> {
        let Some(etag) = self.etag.clone() else {
            return Err(self.fail(
                Code::Transient,
                format!(
                    "failed to read {} at byte {}: {cause}; it has no ETag to resume by, retry later",
                    self.what, self.next
                ),
            ));
        };
        let range = match self.end {
            Some(end) => format!("bytes={}-{}", self.next, end - 1),
            None => format!("bytes={}-", self.next),
        };
        loop {
            if self.tries_left <= 1 || self.resumes >= MAX_RESUMES {
                return Err(self.fail(
                    Code::Transient,
                    format!(
                        "failed to read {} at byte {} after {} resumed requests: {cause}; retry later",
                        self.what, self.next, self.resumes
                    ),
                ));
            }
            self.tries_left -= 1;
            std::thread::sleep(backoff(self.resumes));
            self.resumes += 1;
            let res = self.rt.block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&self.full_key)
                    .range(&range)
                    .if_match(&etag)
                    .send(),
            );
            let out = match res {
                Ok(out) => out,
                Err(e) if matches!(super::status_of(&e), Some(412) | Some(404)) => {
                    return Err(self.changed(&etag))
                }
                Err(e) => {
                    cause = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e));
                    continue;
                }
            };
            // The service must have honoured both conditions; one that ignored
            // If-Match or Range would splice or repeat bytes.
            if out.e_tag() != Some(etag.as_str()) {
                return Err(self.changed(&etag));
            }
            let start = out.content_range().and_then(content_range).map(|r| r.0);
            if start != Some(self.next) {
                return Err(self.fail(
                    Code::Transient,
                    format!(
                        "failed to resume reading {} at byte {}: the object store answered {range} with {:?}; retry later",
                        self.what,
                        self.next,
                        out.content_range()
                    ),
                ));
            }
            self.body = out.body;
            return Ok(());
        }
    }

    fn changed(&self, etag: &str) -> io::Error {
        self.fail(
            Code::Transient,
            format!(
                "failed to read {}: it changed while being read (its ETag is no longer {etag}); the bytes read so far are discarded, retry",
                self.what
            ),
        )
    }
}

/// `err` and its causes, `: `-separated (a body error alone says only
/// "streaming error").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The SDK's attempts per request (`AWS_MAX_ATTEMPTS`, the profile, or 3).
fn max_tries(client: &Client) -> u32 {
    client
        .config()
        .retry_config()
        .map_or(3, |r| r.max_attempts())
}

/// 0.25 s, 0.5 s, 1 s … at most 8 s before resume `n` (counting from 0).
fn backoff(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.min(5))
}

impl Read for S3Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            // The timer must be made inside the runtime.
            let body = &mut self.body;
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(STALL, body.try_next()).await });
            let cause = match got {
                Ok(Ok(Some(c))) => {
                    if !c.is_empty() && self.resumes > 0 {
                        self.tries_left = max_tries(&self.client);
                    }
                    self.next += c.len() as u64;
                    self.chunk = c;
                    continue;
                }
                Ok(Ok(None)) => match self.end {
                    Some(end) if self.next < end => {
                        format!("the body ended {} bytes early", end - self.next)
                    }
                    _ => return Ok(0),
                },
                Ok(Err(e)) => chain(&e),
                Err(_) => format!("no bytes for {} s", STALL.as_secs()),
            };
            if self.end == Some(self.next) {
                return Ok(0);
            }
            self.resume(cause)?;
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_first_and_one_past_last() {
        assert_eq!(content_range("bytes 0-9/10"), Some((0, 10)));
        assert_eq!(
            content_range("bytes 65536-1048575/1048576"),
            Some((65536, 1048576))
        );
        assert_eq!(content_range("bytes */10"), None);
        assert_eq!(content_range("items 0-9/10"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(9), Duration::from_secs(8));
    }
}

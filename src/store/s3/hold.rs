//! Object Lock retention for objects a new backup needs but an earlier one
//! stored: a chunk a snapshot shares, an object a replicate run names by its
//! earlier key, the full export under an incremental, the segments a log
//! segment continues. Each was retained until its own write plus
//! `object_lock_days`; left so, the lock would end under a backup that still
//! needs it. Here each is extended to what an object written now gets.
//!
//! Retention only ever grows (to a tenth of the lock past what is due, so
//! that the next runs need not extend it again): the current date is read first (HeadObject,
//! which shows it to a caller allowed s3:GetObjectRetention) and a new one is set (PutObjectRetention, never with
//! the governance bypass) only when it is later, in the stricter of the
//! object's and the configured mode. Each key is looked at once per store
//! handle (a run), with up to `concurrency` requests in flight.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::Result;
use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
use time::OffsetDateTime;

use super::{sdk_error, status_of, to_time, LockMode, ObjectLock, S3Store};
use crate::exit::{coded, Code};

/// The keys a store handle has already held (extended or found held long
/// enough), so that a run asks once per object.
#[derive(Default, Debug)]
pub(super) struct Held(Mutex<HashSet<String>>);

impl Held {
    /// The keys of `keys` not yet held, marked as held now (a key that then
    /// fails is unmarked by [`Held::forget`]).
    fn claim(&self, keys: &[String]) -> Vec<String> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter(|k| held.insert((*k).clone()))
            .cloned()
            .collect()
    }

    fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// What holding one object did.
enum Outcome {
    Extended,
    AlreadyLonger,
}

fn sdk_mode(mode: LockMode) -> ObjectLockRetentionMode {
    match mode {
        LockMode::Governance => ObjectLockRetentionMode::Governance,
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
    }
}

impl S3Store {
    /// See [`crate::store::Store::extend_retention`].
    pub(super) fn hold(&self, keys: &[String]) -> Result<usize> {
        let Some(lock) = self.s.object_lock else {
            return Ok(0);
        };
        let todo = self.held.0.claim(keys);
        if todo.is_empty() {
            return Ok(0);
        }
        let until = OffsetDateTime::now_utc() + time::Duration::days(i64::from(lock.days));
        // A whole second, as S3 keeps it: never a fraction short of `until`.
        let until = OffsetDateTime::from_unix_timestamp(until.unix_timestamp() + 1)?;
        // An object extended is extended a tenth of the lock further (at
        // least an hour), so that the runs of the next hours find it held
        // and send one HEAD, not a HEAD and a PUT, for it.
        let headroom = time::Duration::seconds((i64::from(lock.days) * 8640).max(3600));
        let width = self.s.concurrency.max(1);
        let mut extended = 0;
        let mut first_error = None;
        for batch in todo.chunks(width * 4) {
            let results = self.rt.block_on(async {
                let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(width));
                let tasks: Vec<_> = batch
                    .iter()
                    .map(|key| {
                        let target = self.full_key(key).map(|full| Target {
                            client: self.client.clone(),
                            bucket: self.s.bucket.clone(),
                            full,
                            what: self.where_(key),
                        });
                        let key = key.clone();
                        let sem = sem.clone();
                        tokio::spawn(async move {
                            let _permit = sem.acquire().await;
                            let r = match target {
                                Ok(t) => t.hold(lock, until, headroom).await,
                                Err(e) => Err(e),
                            };
                            (key, r)
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await);
                }
                out
            });
            for r in results {
                match r {
                    Ok((_, Ok(Outcome::Extended))) => extended += 1,
                    Ok((_, Ok(Outcome::AlreadyLonger))) => {}
                    Ok((key, Err(e))) => {
                        self.held.0.forget(&key);
                        first_error.get_or_insert(e);
                    }
                    Err(e) => {
                        first_error.get_or_insert(anyhow::anyhow!("a retention task failed: {e}"));
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(extended),
        }
    }
}

/// One object whose retention is to be held, as a task needs it.
struct Target {
    client: aws_sdk_s3::Client,
    bucket: String,
    full: String,
    /// The object in messages.
    what: String,
}

impl Target {
    /// Reads the object's retention and extends it to `until` if it ends
    /// sooner.
    async fn hold(
        &self,
        lock: ObjectLock,
        until: OffsetDateTime,
        headroom: time::Duration,
    ) -> Result<Outcome> {
        // HeadObject answers the retention as GetObjectRetention does (with
        // s3:GetObjectRetention), and every S3 service that has Object Lock
        // implements it.
        let got = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.full)
            .send()
            .await;
        let current = match got {
            Ok(out) => Some((
                out.object_lock_mode().map(|m| match m {
                    aws_sdk_s3::types::ObjectLockMode::Compliance => {
                        ObjectLockRetentionMode::Compliance
                    }
                    _ => ObjectLockRetentionMode::Governance,
                }),
                to_time(out.object_lock_retain_until_date()),
            )),
            Err(e) if status_of(&e) == Some(404) => {
                return Err(coded(
                    Code::NotFound,
                    format!(
                        "{} is needed by this backup but is not in the store, so its Object Lock retention cannot be extended: run `bkp verify` to see which backups lack it",
                        self.what
                    ),
                ))
            }
            Err(e) => {
                return Err(sdk_error(
                    e,
                    format!(
                        "failed to read the Object Lock retention of {} (this backup needs it; the host needs s3:GetObjectRetention)",
                        self.what
                    ),
                ))
            }
        };
        let (mode, current_until) = current.unwrap_or((None, None));
        if current_until.is_some_and(|t| t >= until) {
            return Ok(Outcome::AlreadyLonger);
        }
        // Compliance stays compliance; governance becomes compliance when
        // that is what the store is configured with.
        let mode = match (mode, lock.mode) {
            (Some(ObjectLockRetentionMode::Compliance), _) | (_, LockMode::Compliance) => {
                sdk_mode(LockMode::Compliance)
            }
            _ => sdk_mode(LockMode::Governance),
        };
        let until = until + headroom;
        let retention = ObjectLockRetention::builder()
            .mode(mode)
            .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                until.unix_timestamp(),
            ))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(&self.full)
            .retention(retention)
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    e,
                    format!(
                        "failed to extend the Object Lock retention of {} to {} (this backup needs it; the host needs s3:PutObjectRetention)",
                        self.what,
                        until
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    ),
                )
            })?;
        Ok(Outcome::Extended)
    }
}

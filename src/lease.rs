//! A lease held in the store: one host at a time continues a chain.
//!
//! The run lock ([`crate::lock`]) is a file on one host. Production runs bkp on
//! several machines (each replica's host, a standby); two hosts running `bkp logs` for
//! one cluster into one store would both read the same chain head and both continue
//! it, forking the chain. So `logs` also holds a lease in the store itself, built on
//! nothing but create-only writes (S3 `If-None-Match: *`, `O_EXCL` in a directory),
//! listings and reads:
//!
//! - The leases of a scope are objects `leases/{scope}/{epoch:020}.json`, the epoch
//!   counting up. Only the newest valid epoch counts: it names its holder (host, pid,
//!   run id) and when it expires, or says the lease was released.
//! - A run takes the lease by listing the scope, reading the newest epoch, and, when
//!   that is released or expired (or there is none), creating the next epoch
//!   create-only. Of two runs racing for one epoch exactly one create succeeds; the
//!   other reads again and finds the lease held: it exits with the lock code and
//!   says who holds it and until when.
//! - The holder renews by creating the next epoch (same holder, a later expiry)
//!   before each step that writes to the chain ([`Lease::renew`]). If that epoch
//!   exists, or once created a higher one is listed, another host took the lease
//!   over after it expired (this run outlived it): the run stores no manifest. A
//!   holder whose lease expired by its own monotonic clock does not even try.
//!   The listing after the create matters because epochs are deleted as holders
//!   move on: a run that stalled past its lease may find the next epoch's slot
//!   free again although its successor moved beyond it. An epoch is deleted only
//!   after a higher one was created, so the highest epoch created so far is
//!   always listed, and two hosts never both believe they hold the lease.
//! - Release writes one more epoch saying `released`; a lease whose holder died is
//!   taken over once it expires, or at once by a run on the holder's own host that
//!   finds the holder's process gone (host names must be unique: `BKP_HOSTNAME`). Older epochs are deleted as the holder moves on,
//!   and every epoch listed below a newly taken one (never the newest: every
//!   decision ends in a create-only write of the next), so a scope holds one or two
//!   objects between runs.
//! - The bucket is untrusted: with `[encryption]` a lease is sealed like a manifest,
//!   and must name its own scope and epoch. One that does not verify (planted,
//!   damaged, copied from another epoch) is ignored with a warning and the next
//!   epoch is created above it, so a planted object cannot block the chain.
//! - Hosts compare the expiry with their own clocks: keep them within a small
//!   fraction of the lease duration of each other (NTP does).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::exit::{coded, Code};
use crate::manifest::seal::{self, Trust};

use crate::store::Store;

/// The lease's documents carry this schema.
const SCHEMA: &str = "bkp.lease/1";
/// Reads of invalid newest epochs before giving up on finding a valid one.
const MAX_READS: usize = 8;
/// Attempts to create the next epoch when other runs keep taking it.
const MAX_ATTEMPTS: usize = 5;

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// The run's backup id.
    pub run: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doc {
    schema: String,
    scope: String,
    epoch: u64,
    holder: Holder,
    #[serde(with = "time::serde::rfc3339")]
    acquired_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    released: bool,
}

/// A lease this run holds. Dropping it without [`Lease::release`] leaves it to
/// expire.
pub struct Lease<'a> {
    store: &'a dyn Store,
    trust: &'a Trust,
    scope: String,
    holder: Holder,
    duration: std::time::Duration,
    epoch: u64,
    acquired_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    /// When the epoch held expires by this host's monotonic clock (counted from
    /// before the write that created it).
    valid_until: std::time::Instant,
    warn: &'a dyn Fn(&str),
}

fn key(scope: &str, epoch: u64) -> String {
    format!("leases/{scope}/{epoch:020}.json")
}

fn epoch_of(scope: &str, key: &str) -> Option<u64> {
    let rest = key.strip_prefix(&format!("leases/{scope}/"))?;
    let digits = rest.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// What the newest epochs of a scope say.
struct Seen {
    /// The highest epoch number of any object under the scope (valid or not).
    highest: Option<u64>,
    /// Every epoch listed, newest first.
    epochs: Vec<u64>,
    /// The newest valid lease document.
    newest: Option<Doc>,
}

impl<'a> Lease<'a> {
    /// Takes the lease of `scope` for `duration`, or fails with [`Code::Locked`]
    /// naming the holder. `warn` reports ignored (invalid) lease objects.
    pub fn acquire(
        store: &'a dyn Store,
        trust: &'a Trust,
        scope: &str,
        holder: Holder,
        duration: std::time::Duration,
        warn: &'a dyn Fn(&str),
    ) -> Result<Lease<'a>> {
        let mut lease = Lease {
            store,
            trust,
            scope: scope.to_string(),
            holder,
            duration,
            epoch: 0,
            acquired_at: OffsetDateTime::now_utc(),
            expires_at: OffsetDateTime::now_utc(),
            valid_until: std::time::Instant::now(),
            warn,
        };
        for _ in 0..MAX_ATTEMPTS {
            let seen = lease.read()?;
            let now = OffsetDateTime::now_utc();
            if let Some(d) = &seen.newest {
                if !d.released && d.expires_at > now && d.holder != lease.holder {
                    if d.holder.host != lease.holder.host || process_alive(d.holder.pid) {
                        return Err(lease.held_by(d));
                    }
                    // Its holder ran on this host and is gone (killed, crashed):
                    // nobody else can be continuing the chain under it.
                    (lease.warn)(&format!(
                        "taking over the lease {} from run {} (pid {} on this host), which died holding it",
                        lease.scope, d.holder.run, d.holder.pid
                    ));
                }
            }
            let next = match seen.highest {
                None => 0,
                Some(h) => h.checked_add(1).ok_or_else(|| {
                    coded(
                        Code::Integrity,
                        format!(
                            "{}: the lease epochs are exhausted (an object at epoch {h}); remove leases/{}/ if no bkp run holds it",
                            store.identity(),
                            lease.scope
                        ),
                    )
                })?,
            };
            lease.acquired_at = now;
            if lease.create(next, false)? {
                // Below the new epoch nothing counts any more: the previous
                // holder's last epochs (and ignored objects) go.
                for n in seen.epochs {
                    let _ = store.delete(&key(&lease.scope, n));
                }
                return Ok(lease);
            }
            // Another run created that epoch first: look again.
        }
        Err(coded(
            Code::Locked,
            format!(
                "the lease {} in {} keeps changing hands: other bkp runs are taking it; try again later",
                lease.scope,
                store.identity()
            ),
        ))
    }

    /// The epoch this run holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Renews the lease before a step that writes to the chain: fails with
    /// [`Code::Locked`] when another host took it over (this run outlived it).
    ///
    /// Three checks, each enough on its own in its own case: the lease must not
    /// have expired by this host's monotonic clock; the next epoch must not exist
    /// (another host took the lease and moved on from it); and once it is created,
    /// no higher epoch may exist. The last one matters because holders delete
    /// their older epochs: a run that stalled past its lease could otherwise
    /// create an epoch its successor had already deleted, and both would write.
    pub fn renew(&mut self) -> Result<()> {
        if std::time::Instant::now() >= self.valid_until {
            return Err(self.taken_over(&format!(
                "expired while this run held it (it ran longer than the lease's {:?})",
                self.duration
            )));
        }
        let old = self.epoch;
        let lost = !self.create(old + 1, false)?
            || self.epochs()?.first().is_some_and(|&h| h > self.epoch);
        if lost {
            let by = self
                .read()
                .ok()
                .and_then(|s| s.newest)
                .map(|d| by(&d.holder))
                .unwrap_or_default();
            return Err(self.taken_over(&format!(
                "was taken over{by} while this run held it (it ran longer than the lease's {:?})",
                self.duration
            )));
        }
        let _ = self.store.delete(&key(&self.scope, old));
        Ok(())
    }

    /// The error of a run that no longer holds its lease: `what` happened to it.
    fn taken_over(&self, what: &str) -> anyhow::Error {
        coded(
            Code::Locked,
            format!(
                "the lease {} in {} {what}: this run stores nothing more; the host that holds it now continues the chain",
                self.scope,
                self.store.identity(),
            ),
        )
    }

    /// Releases the lease (best effort: otherwise it expires).
    pub fn release(mut self) {
        let old = self.epoch;
        if matches!(self.create(old + 1, true), Ok(true)) {
            let _ = self.store.delete(&key(&self.scope, old));
        }
    }

    fn held_by(&self, d: &Doc) -> anyhow::Error {
        coded(
            Code::Locked,
            format!(
                "another host runs this: {} (pid {}, run {}) holds the lease {} in {} until {}; it is released when that run ends, or taken over once it expires if that run died",
                d.holder.host,
                d.holder.pid,
                d.holder.run,
                self.scope,
                self.store.identity(),
                rfc3339(d.expires_at)
            ),
        )
    }

    /// Creates epoch `n` with this holder; `false` when it exists already.
    fn create(&mut self, n: u64, released: bool) -> Result<bool> {
        let sent = std::time::Instant::now();
        let now = OffsetDateTime::now_utc();
        let expires_at = now + self.duration;
        let doc = Doc {
            schema: SCHEMA.into(),
            scope: self.scope.clone(),
            epoch: n,
            holder: self.holder.clone(),
            acquired_at: self.acquired_at,
            expires_at,
            released,
        };
        let bytes = seal::encode(&doc, self.trust.keys())?;
        let k = key(&self.scope, n);
        match self.store.put_new(&k, &bytes, &Vec::new()) {
            Ok(_) => {
                self.epoch = n;
                self.expires_at = expires_at;
                self.valid_until = sent + self.duration;
                Ok(true)
            }
            Err(e) if crate::store::is_already_exists(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("failed to write the lease {k}")),
        }
    }

    /// Every epoch listed in the scope, newest first.
    fn epochs(&self) -> Result<Vec<u64>> {
        let prefix = format!("leases/{}/", self.scope);
        let mut epochs: Vec<u64> = self
            .store
            .list(&prefix)?
            .iter()
            .filter_map(|o| epoch_of(&self.scope, &o.key))
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(epochs)
    }

    /// Lists the scope and reads the newest valid lease.
    fn read(&self) -> Result<Seen> {
        let epochs = self.epochs()?;
        let mut newest = None;
        for &n in epochs.iter().take(MAX_READS) {
            let k = key(&self.scope, n);
            let bytes = match self.store.get(&k) {
                Ok(b) => b,
                // Deleted meanwhile by its holder moving on: an older epoch.
                Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => continue,
                Err(e) => return Err(e),
            };
            match self.parse(&bytes, &k, n) {
                Ok(d) => {
                    newest = Some(d);
                    break;
                }
                Err(why) => (self.warn)(&format!(
                    "ignoring the lease object {k} in {}: {why}",
                    self.store.identity()
                )),
            }
        }
        Ok(Seen {
            highest: epochs.first().copied(),
            epochs,
            newest,
        })
    }

    fn parse(&self, bytes: &[u8], k: &str, n: u64) -> std::result::Result<Doc, String> {
        let what = format!("lease {k}");
        let opened = seal::open(bytes, &what, self.trust).map_err(|e| format!("{e:#}"))?;
        if self.trust.keys().is_some() && !opened.sealed {
            return Err("it is not sealed, so it is not from this installation".into());
        }
        let d: Doc = serde_json::from_value(opened.value)
            .map_err(|e| format!("it is not a lease document ({e})"))?;
        if d.schema != SCHEMA || d.scope != self.scope || d.epoch != n {
            return Err(format!(
                "it says schema {:?}, scope {:?}, epoch {}: not this lease's epoch {n}",
                d.schema, d.scope, d.epoch
            ));
        }
        Ok(d)
    }
}

/// ` by HOST (pid …, run …)`, naming a holder in a message.
fn by(h: &Holder) -> String {
    format!(" by {} (pid {}, run {})", h.host, h.pid, h.run)
}

/// Whether process `pid` of this host is alive (or may be: not ours to signal).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    // Signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// This process on `host`, running `run`, as a lease names its holder.
pub fn holder(host: String, run: &str) -> Holder {
    Holder {
        host,
        pid: std::process::id(),
        run: run.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::time::Duration;

    fn holder(host: &str, pid: u32) -> Holder {
        Holder {
            host: host.into(),
            pid,
            run: format!("run-{host}-{pid}"),
        }
    }

    /// Takes lease `s` of `store` for `who`, warnings ignored.
    fn take<'a>(
        store: &'a MemoryStore,
        trust: &'a Trust,
        who: Holder,
        duration: Duration,
    ) -> Lease<'a> {
        fn quiet(_: &str) {}
        Lease::acquire(store, trust, "s", who, duration, &quiet).unwrap()
    }

    /// A pid no process has (beyond Linux's largest `pid_max`).
    const GONE: u32 = 1 << 23;

    #[test]
    fn a_run_that_outlived_its_lease_cannot_renew_it() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        let mut x = take(&store, &trust, holder("x", 1), Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(400));
        // Another host takes the expired lease over, and releases it: epoch 1 is
        // deleted, epoch 2 says released.
        let y = take(&store, &trust, holder("y", 2), Duration::from_secs(60));
        assert_eq!(y.epoch(), 1);
        y.release();
        let e = x.renew().unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(
            format!("{e:#}").contains("expired while this run held it"),
            "{e:#}"
        );
    }

    #[test]
    fn a_holder_cannot_renew_into_an_epoch_its_successor_deleted() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        // A holder on this host whose process is gone is taken over at once; it
        // still holds a lease that is valid by its own clock.
        let mut x = take(&store, &trust, holder("h", GONE), Duration::from_secs(60));
        let mut y = take(
            &store,
            &trust,
            holder("h", std::process::id()),
            Duration::from_secs(60),
        );
        assert_eq!((x.epoch(), y.epoch()), (0, 1));
        // The successor moves on: epoch 2, and epoch 1's slot is free again.
        y.renew().unwrap();
        assert!(store.head(&key("s", 1)).unwrap().is_none());
        let e = x.renew().unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(format!("{e:#}").contains("was taken over by h"), "{e:#}");
        // The successor still holds it.
        y.renew().unwrap();
    }

    #[test]
    fn epochs_are_read_only_from_their_own_keys() {
        assert_eq!(
            epoch_of("s", "leases/s/00000000000000000042.json"),
            Some(42)
        );
        assert_eq!(key("s", 42), "leases/s/00000000000000000042.json");
        assert_eq!(epoch_of("s", "leases/s/42.json"), None);
        assert_eq!(epoch_of("s", "leases/t/00000000000000000042.json"), None);
        assert_eq!(epoch_of("s", "leases/s/0000000000000000004x.json"), None);
        assert_eq!(epoch_of("s", "leases/s/99999999999999999999.json"), None);
    }
}

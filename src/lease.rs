//! A lease held in the store: one host at a time continues a chain.
//!
//! The run lock ([`crate::lock`]) is a file on one host. Production runs bkp on
//! several machines (each replica's host, a standby); two hosts running `bkp logs` for
//! one cluster into one store would both read the same chain head and both continue
//! it, forking the chain. So `logs` also holds a lease in the store itself, built on
//! nothing but writes, listings and reads. It does not rely on create-only writes
//! being atomic: some S3-compatible servers (SeaweedFS among them) let two
//! simultaneous `If-None-Match: *` writes of one key both succeed.
//!
//! - The leases of a scope are *claims*, objects `leases/{scope}/{epoch:020}-{tag}.json`,
//!   the epoch counting up and the tag random, so that no two writers ever share a
//!   key. A claim names its holder (host, pid, run id) and when it expires, or says
//!   the lease was released.
//! - A claim holds only if, once written, a listing of the scope shows no other
//!   claim at its epoch or above. Of two runs claiming at once, each writes before
//!   it lists, so at least one of them sees the other and gives up (deleting its
//!   claim): never both hold. Both may give up; they try again after a random pause.
//! - A run takes the lease by listing the scope and reading the newest epoch's
//!   claims: when none of them is held (all released or expired; or there is none),
//!   it claims the next epoch. Otherwise it exits with the lock code and says who
//!   holds the lease and until when.
//! - The holder renews by claiming the next epoch (same holder, a later expiry)
//!   before each step that writes to the chain ([`Lease::renew`]). If that claim
//!   does not hold, another host took the lease over after it expired (this run
//!   outlived it): the run stores no manifest. A holder whose lease expired by its
//!   own monotonic clock does not even try. Claims are deleted only below a higher
//!   claim that holds, so the highest one that ever held is always listed, and a
//!   run that stalled past its lease finds its successor's.
//! - Release claims one more epoch saying `released`; a lease whose holder died is
//!   taken over once it expires, or at once by a run on the holder's own host that
//!   finds the holder's process gone (host names must be unique: `BKP_HOSTNAME`).
//!   Older claims are deleted as the holder moves on, and every claim listed below a
//!   newly taken epoch, so a scope holds one or two objects between runs.
//! - The bucket is untrusted: with `[encryption]` a claim is sealed like a manifest,
//!   and must name its own scope, epoch and tag. One that does not verify (planted,
//!   damaged, copied from another key) is ignored with a warning and the next epoch
//!   is claimed above it, so a planted object cannot block the chain.
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
    /// The claim's own tag, as in its key.
    tag: String,
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
    /// The key of the claim this run holds.
    claim: String,
    acquired_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    /// When the epoch held expires by this host's monotonic clock (counted from
    /// before the write that created it).
    valid_until: std::time::Instant,
    warn: &'a dyn Fn(&str),
}

fn key(scope: &str, epoch: u64, tag: &str) -> String {
    format!("leases/{scope}/{epoch:020}-{tag}.json")
}

/// A claim's epoch and tag, from its key.
fn claim_of<'k>(scope: &str, key: &'k str) -> Option<(u64, &'k str)> {
    let rest = key.strip_prefix(&format!("leases/{scope}/"))?;
    let (digits, tag) = rest.strip_suffix(".json")?.split_once('-')?;
    let ok = digits.len() == 20
        && digits.bytes().all(|b| b.is_ascii_digit())
        && tag.len() == 16
        && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    Some((digits.parse().ok()?, tag)).filter(|_| ok)
}

/// A fresh tag: no two claims share a key.
fn new_tag() -> String {
    format!("{:016x}", crate::id::random_u64())
}

/// One claim listed in the scope.
struct Listed {
    epoch: u64,
    key: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// What the newest epochs of a scope say.
struct Seen {
    /// The highest epoch of any claim under the scope (valid or not).
    highest: Option<u64>,
    /// Every claim listed, newest first.
    claims: Vec<Listed>,
    /// The newest epoch's valid claim that holds the lease if any does (it is
    /// neither released nor expired at `now`), else any valid claim of it.
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
            claim: String::new(),
            acquired_at: OffsetDateTime::now_utc(),
            expires_at: OffsetDateTime::now_utc(),
            valid_until: std::time::Instant::now(),
            warn,
        };
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // Two runs that saw each other's claims both gave up: try again
                // apart.
                let ms = 20 + crate::id::random_u64() % 200;
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
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
            if lease.claim(next)? {
                // Below the new epoch nothing counts any more: the previous
                // holder's last claims (and ignored objects) go.
                for c in seen.claims.iter().filter(|c| c.epoch < next) {
                    let _ = store.delete(&c.key);
                }
                return Ok(lease);
            }
            // Another run claimed that epoch too: look again.
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
    /// Two checks, each enough on its own in its own case: the lease must not
    /// have expired by this host's monotonic clock; and the claim of the next
    /// epoch must hold (no other claim at that epoch or above is listed once it
    /// is written). The listing sees a successor that moved on and deleted its
    /// older claims, as the highest claim that held is never deleted.
    pub fn renew(&mut self) -> Result<()> {
        if std::time::Instant::now() >= self.valid_until {
            return Err(self.taken_over(&format!(
                "expired while this run held it (it ran longer than the lease's {:?})",
                self.duration
            )));
        }
        let old = self.claim.clone();
        if !self.claim(self.epoch + 1)? {
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
        let _ = self.store.delete(&old);
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

    /// Releases the lease (best effort: otherwise it expires). The released
    /// claim is not checked: one that loses to a simultaneous claim above the
    /// expired lease leaves that claim holding, as it should.
    pub fn release(self) {
        let next = self.epoch + 1;
        let k = key(&self.scope, next, &new_tag());
        if let Ok(bytes) = self.encode(next, &k, true) {
            if self.store.put_new(&k, &bytes, &Vec::new()).is_ok() {
                let _ = self.store.delete(&self.claim);
            }
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

    /// This holder's claim document for epoch `n` under key `k`.
    fn encode(&self, n: u64, k: &str, released: bool) -> Result<Vec<u8>> {
        let (_, tag) = claim_of(&self.scope, k).context("a lease key this bkp made")?;
        let now = OffsetDateTime::now_utc();
        seal::encode(
            &Doc {
                schema: SCHEMA.into(),
                scope: self.scope.clone(),
                epoch: n,
                tag: tag.to_string(),
                holder: self.holder.clone(),
                acquired_at: self.acquired_at,
                expires_at: now + self.duration,
                released,
            },
            self.trust.keys(),
        )
    }

    /// Claims epoch `n` for this holder (not released): `true` when the claim holds (no other
    /// claim at `n` or above is listed after it was written), and this run now
    /// holds epoch `n`; `false` when another run's claim competes (this one is
    /// then deleted).
    fn claim(&mut self, n: u64) -> Result<bool> {
        let sent = std::time::Instant::now();
        let expires_at = OffsetDateTime::now_utc() + self.duration;
        let k = key(&self.scope, n, &new_tag());
        let bytes = self.encode(n, &k, false)?;
        match self.store.put_new(&k, &bytes, &Vec::new()) {
            Ok(_) => {}
            // A tag drawn twice: as good as a competing claim.
            Err(e) if crate::store::is_already_exists(&e) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("failed to write the lease {k}")),
        }
        let rivals = self.listing()?.iter().any(|c| c.epoch >= n && c.key != k);
        if rivals {
            let _ = self.store.delete(&k);
            return Ok(false);
        }
        self.epoch = n;
        self.claim = k;
        self.expires_at = expires_at;
        self.valid_until = sent + self.duration;
        Ok(true)
    }

    /// Every claim listed in the scope, newest epoch first.
    fn listing(&self) -> Result<Vec<Listed>> {
        let prefix = format!("leases/{}/", self.scope);
        let mut claims: Vec<Listed> = self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| {
                let (epoch, _) = claim_of(&self.scope, &o.key)?;
                Some(Listed { epoch, key: o.key })
            })
            .collect();
        claims.sort_unstable_by(|a, b| b.epoch.cmp(&a.epoch).then_with(|| a.key.cmp(&b.key)));
        Ok(claims)
    }

    /// Lists the scope and reads the claims of the newest epoch that has a
    /// valid one.
    fn read(&self) -> Result<Seen> {
        let claims = self.listing()?;
        let now = OffsetDateTime::now_utc();
        let mut newest: Option<Doc> = None;
        let mut epoch = None;
        for c in claims.iter().take(MAX_READS) {
            if newest.is_some() && epoch != Some(c.epoch) {
                break;
            }
            let bytes = match self.store.get(&c.key) {
                Ok(b) => b,
                // Deleted meanwhile: a claim that lost, or an older epoch.
                Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => continue,
                Err(e) => return Err(e),
            };
            match self.parse(&bytes, &c.key, c.epoch) {
                Ok(d) => {
                    let holds = |d: &Doc| !d.released && d.expires_at > now;
                    if newest.as_ref().is_none_or(|n| !holds(n) && holds(&d)) {
                        newest = Some(d);
                    }
                    epoch = Some(c.epoch);
                }
                Err(why) => (self.warn)(&format!(
                    "ignoring the lease object {} in {}: {why}",
                    c.key,
                    self.store.identity()
                )),
            }
        }
        Ok(Seen {
            highest: claims.first().map(|c| c.epoch),
            claims,
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
        let tag = claim_of(&self.scope, k).map(|(_, t)| t);
        if d.schema != SCHEMA || d.scope != self.scope || d.epoch != n || tag != Some(&d.tag) {
            return Err(format!(
                "it says schema {:?}, scope {:?}, epoch {}, tag {:?}: not this lease's claim {k}",
                d.schema, d.scope, d.epoch, d.tag
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
        // The successor moves on: epoch 2, and its claim of epoch 1 is gone.
        y.renew().unwrap();
        assert_eq!(epochs(&store), [2]);
        let e = x.renew().unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(format!("{e:#}").contains("was taken over by h"), "{e:#}");
        // The successor still holds it.
        y.renew().unwrap();
    }

    /// The epochs of the claims in scope `s`, newest first.
    fn epochs(store: &dyn Store) -> Vec<u64> {
        let mut e: Vec<u64> = store
            .list("leases/s/")
            .unwrap()
            .iter()
            .filter_map(|o| claim_of("s", &o.key).map(|(n, _)| n))
            .collect();
        e.sort_unstable_by(|a, b| b.cmp(a));
        e
    }

    /// What runs inside [`Racy`]'s first listing.
    type Racer = Box<dyn FnOnce(&dyn Store) + Send>;

    /// A store whose create-only writes are not atomic (as on some S3-compatible
    /// servers: a write that checked for the key before another's landed
    /// replaces it), and that runs `racer` inside the first listing, between a
    /// run's look at the scope and its write.
    struct Racy {
        inner: MemoryStore,
        racer: std::sync::Mutex<Option<Racer>>,
    }

    impl Store for Racy {
        fn identity(&self) -> String {
            self.inner.identity()
        }
        fn create(
            &self,
            key: &str,
            metadata: &crate::store::Metadata,
        ) -> Result<Box<dyn crate::store::ObjectWriter>> {
            self.inner.delete(key)?;
            self.inner.create(key, metadata)
        }
        fn put_new(
            &self,
            key: &str,
            bytes: &[u8],
            metadata: &crate::store::Metadata,
        ) -> Result<crate::store::ObjectInfo> {
            self.inner.delete(key)?;
            self.inner.put_new(key, bytes, metadata)
        }
        fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>> {
            self.inner.open(key)
        }
        fn head(&self, key: &str) -> Result<Option<crate::store::ObjectInfo>> {
            self.inner.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
            let listed = self.inner.list(prefix)?;
            let racer = self.racer.lock().unwrap().take();
            if let Some(racer) = racer {
                racer(self);
            }
            Ok(listed)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn two_runs_racing_for_an_epoch_never_both_hold_it() {
        let won = std::sync::Arc::new(std::sync::Mutex::new(None));
        let racer_won = won.clone();
        let store = Racy {
            inner: MemoryStore::new(),
            racer: std::sync::Mutex::new(Some(Box::new(move |store: &dyn Store| {
                fn quiet(_: &str) {}
                let trust = Trust::none();
                let b = Lease::acquire(
                    store,
                    &trust,
                    "s",
                    holder("b", 2),
                    Duration::from_secs(60),
                    &quiet,
                );
                // Dropped unreleased: it holds until it expires.
                *racer_won.lock().unwrap() =
                    Some(b.map(|l| l.epoch()).map_err(|e| format!("{e:#}")));
            }))),
        };
        let trust = Trust::none();
        fn quiet(_: &str) {}
        // `a` lists an empty scope; `b` takes the lease before `a` writes epoch 0.
        let a = Lease::acquire(
            &store,
            &trust,
            "s",
            holder("a", 1),
            Duration::from_secs(60),
            &quiet,
        );
        assert_eq!(*won.lock().unwrap(), Some(Ok(0)), "the racer holds epoch 0");
        let e = a.err().expect("only one of the two holds the lease");
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(format!("{e:#}").contains("b (pid 2"), "{e:#}");
    }

    #[test]
    fn claims_are_read_only_from_their_own_keys() {
        let k = "leases/s/00000000000000000042-0123456789abcdef.json";
        assert_eq!(claim_of("s", k), Some((42, "0123456789abcdef")));
        assert_eq!(key("s", 42, "0123456789abcdef"), k);
        assert_eq!(claim_of("s", "leases/s/00000000000000000042.json"), None);
        assert_eq!(claim_of("s", "leases/s/42-0123456789abcdef.json"), None);
        assert_eq!(claim_of("t", k), None);
        assert_eq!(
            claim_of("s", "leases/s/0000000000000000004x-0123456789abcdef.json"),
            None
        );
        assert_eq!(
            claim_of("s", "leases/s/00000000000000000042-0123456789ABCDEF.json"),
            None
        );
        assert_eq!(
            claim_of("s", "leases/s/99999999999999999999-0123456789abcdef.json"),
            None
        );
        assert_eq!(new_tag().len(), 16);
    }
}

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
//!   and must name its own scope, epoch and tag. One that does not verify may still
//!   be another host's (sealed with a key or signer this host lacks): written less
//!   than a lease ago it counts as held, and the message says what to give this
//!   host. Older, it is ignored with a warning and the next epoch is claimed above
//!   it, so a planted object delays runs by at most one lease.
//! - A step longer than the lease (the capture of a large backlog) renews it as
//!   it goes ([`Lease::keep_alive`]).
//! - Epochs stay at or below [`MAX_EPOCH`], which no lease reaches (a claim a
//!   second for 30 billion years): an object above it is not bkp's and is
//!   ignored with a warning, so a planted claim at `u64::MAX` can neither
//!   exhaust the epochs nor make them wrap. A claim is read to at most
//!   [`crate::limits::LEASE`] bytes; a larger one counts as one that does not
//!   verify.
//! - Hosts compare the expiry with their own clocks: keep them within a small
//!   fraction of the lease duration of each other (NTP does).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::exit::{coded, Code};
use crate::manifest::seal::{self, Trust};

use crate::store::Store;
use crate::units::rfc3339;

/// The lease's documents carry this schema.
const SCHEMA: &str = "bkp.lease/1";
/// Reads of invalid newest claims before giving up on finding a valid one.
const MAX_READS: usize = 8;
/// Attempts to claim the next epoch when other runs keep claiming it too.
const MAX_ATTEMPTS: usize = 5;
/// The highest epoch a claim may have (see the module's documentation).
pub const MAX_EPOCH: u64 = 1_000_000_000_000_000_000;

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
    /// The claim's own tag, as in its key (empty in the keys of earlier builds,
    /// `{epoch:020}.json`).
    #[serde(default)]
    tag: String,
    holder: Holder,
    #[serde(with = "time::serde::rfc3339")]
    acquired_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    released: bool,
}

impl Doc {
    /// Whether this claim holds the lease at `now`.
    fn holds(&self, now: OffsetDateTime) -> bool {
        !self.released && self.expires_at > now
    }
}

/// A lease this run holds. Dropping it without [`Lease::release`] leaves it to
/// expire.
pub struct Lease<'a> {
    store: &'a dyn Store,
    trust: &'a Trust,
    scope: String,
    covers: Covers,
    holder: Holder,
    duration: std::time::Duration,
    epoch: u64,
    /// The key of the claim this run holds.
    claim: String,
    acquired_at: OffsetDateTime,
    /// When the claim held was sent, by this host's monotonic clock: it
    /// expires `duration` later.
    claimed: std::time::Instant,
    /// A renewal found the lease lost: nothing more is written.
    lost: bool,
    warn: &'a dyn Fn(&str),
}

/// What a lease's claims are of, for a signer's scope: a claim sealed by a
/// signer (a write-only host) whose scope lacks its holder's host, this kind or
/// this cluster is not that host's to make, and is ignored at once (a stolen
/// host's key must not hold other hosts' chains).
#[derive(Debug, Clone, Copy, Default)]
pub struct Covers {
    pub kind: Option<crate::kinds::Kind>,
    pub tigerbeetle_cluster: Option<u128>,
}

/// Why a claim is not believed.
enum Unbelieved {
    /// It does not verify: it may be another host's, sealed with a key or
    /// signer this host lacks.
    Unverified(String),
    /// It verifies, but its signer's scope does not cover it.
    OutOfScope(String),
}

fn key(scope: &str, epoch: u64, tag: &str) -> String {
    format!("leases/{scope}/{epoch:020}-{tag}.json")
}

/// A claim's epoch and tag, from its key; the tag is empty in the keys of
/// earlier builds (`{epoch:020}.json`), which count as claims too.
fn claim_of<'k>(scope: &str, key: &'k str) -> Option<(u64, &'k str)> {
    let rest = key.strip_prefix(&format!("leases/{scope}/"))?;
    let stem = rest.strip_suffix(".json")?;
    let hex = |t: &str| t.len() == 16 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (digits, tag) = match stem.split_once('-') {
        Some((digits, tag)) if hex(tag) => (digits, tag),
        Some(_) => return None,
        None => (stem, ""),
    };
    let ok = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
    Some((digits.parse().ok()?, tag)).filter(|_| ok)
}

/// A fresh tag: no two claims share a key.
fn new_tag() -> String {
    format!("{:016x}", crate::id::random_u64())
}

/// One claim listed in the scope.
struct Listed {
    epoch: u64,
    tag: String,
    key: String,
    /// When the store says it was written.
    modified: Option<OffsetDateTime>,
}

/// What the newest epochs of a scope say.
struct Seen {
    /// Every claim listed, newest epoch first.
    claims: Vec<Listed>,
    /// The newest epoch's valid claim that holds the lease if any does, else
    /// any valid claim of it.
    newest: Option<Doc>,
    /// A claim above `newest` (or with none) that does not verify here but was
    /// written less than a lease ago: it may be another host's that holds the
    /// lease, sealed with a key or signer this host lacks. Its key, when it
    /// counts as held until, and why it does not verify.
    unverified: Option<(String, OffsetDateTime, String)>,
}

impl<'a> Lease<'a> {
    /// Takes the lease of `scope` for `duration`, or fails with [`Code::Locked`]
    /// naming the holder. `warn` reports ignored (invalid) lease objects.
    /// `covers`: what its claims are of, for a signer's scope.
    pub fn acquire(
        store: &'a dyn Store,
        trust: &'a Trust,
        (scope, covers): (&str, Covers),
        holder: Holder,
        duration: std::time::Duration,
        warn: &'a dyn Fn(&str),
    ) -> Result<Lease<'a>> {
        let mut lease = Lease {
            store,
            trust,
            scope: scope.to_string(),
            covers,
            holder,
            duration,
            epoch: 0,
            claim: String::new(),
            acquired_at: OffsetDateTime::now_utc(),
            claimed: std::time::Instant::now(),
            lost: false,
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
            if let Some((k, until, why)) = &seen.unverified {
                return Err(coded(
                    Code::Locked,
                    format!(
                        "the lease {} in {} has a claim this host cannot verify, {k} ({why}); written less than a lease ago, it counts as held until {}: if another host of this installation holds the lease, give this host its key or signer in [encryption]; if the object is not from this installation, remove it",
                        lease.scope,
                        store.identity(),
                        rfc3339(*until)
                    ),
                ));
            }
            if let Some(d) = &seen.newest {
                if d.holds(now) && d.holder != lease.holder {
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
            let next = match seen.claims.first() {
                None => 0,
                Some(h) => lease.after(h.epoch)?,
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

    /// Renews the lease before a step that writes to the chain: fails with
    /// [`Code::Locked`] when another host took it over (this run outlived it).
    ///
    /// Two checks, each enough on its own in its own case: the lease must not
    /// have expired by this host's monotonic clock; and the claim of the next
    /// epoch must hold (no other claim at that epoch or above is listed once it
    /// is written). The listing sees a successor that moved on and deleted its
    /// older claims, as the highest claim that held is never deleted.
    pub fn renew(&mut self) -> Result<()> {
        if self.lost {
            return Err(self.taken_over("was lost earlier in this run"));
        }
        if self.claimed.elapsed() >= self.duration {
            self.lost = true;
            return Err(self.taken_over(&format!(
                "expired while this run held it: a step ran longer than the lease's {:?} without renewing it; raise [tigerbeetle] log_lease",
                self.duration
            )));
        }
        let old = self.claim.clone();
        let next = self.after(self.epoch)?;
        if !self.claim(next)? {
            self.lost = true;
            let by = self
                .read()
                .ok()
                .and_then(|s| s.newest)
                .map(|d| by(&d.holder))
                .unwrap_or_default();
            return Err(self.taken_over(&format!(
                "was taken over{by} while this run held it (it ran longer than the lease's {:?}); the host that holds it now continues the chain",
                self.duration
            )));
        }
        let _ = self.store.delete(&old);
        Ok(())
    }

    /// Renews the lease once a third of it has passed since the last claim:
    /// for a long step (the capture of a large backlog) to call as it goes, so
    /// that the lease does not run out under it.
    pub fn keep_alive(&mut self) -> Result<()> {
        if self.claimed.elapsed() >= self.duration / 3 {
            self.renew()?;
        }
        Ok(())
    }

    /// The error of a run that no longer holds its lease: `what` happened to it.
    fn taken_over(&self, what: &str) -> anyhow::Error {
        coded(
            Code::Locked,
            format!(
                "the lease {} in {} {what}: this run stores nothing more",
                self.scope,
                self.store.identity(),
            ),
        )
    }

    /// Releases the lease (best effort: otherwise it expires); nothing when a
    /// renewal found it lost. The released claim is not checked: one that
    /// competes with a claim above an expired lease leaves that claim holding,
    /// as it should.
    pub fn release(self) {
        if self.lost {
            return;
        }
        let Ok(next) = self.after(self.epoch) else {
            return;
        };
        let tag = new_tag();
        if let Ok(bytes) = self.encode(next, &tag, true) {
            let k = key(&self.scope, next, &tag);
            if self.store.put_new(&k, &bytes, &Vec::new()).is_ok() {
                let _ = self.store.delete(&self.claim);
            }
        }
    }

    /// The epoch after `epoch`, or an error when that would pass [`MAX_EPOCH`].
    fn after(&self, epoch: u64) -> Result<u64> {
        epoch
            .checked_add(1)
            .filter(|n| *n <= MAX_EPOCH)
            .ok_or_else(|| {
                coded(
                    Code::Integrity,
                    format!(
                        "{}: the lease epochs of {} are exhausted (a claim at epoch {epoch}, the highest a lease may have); remove leases/{}/ if no bkp run holds it",
                        self.store.identity(),
                        self.scope,
                        self.scope
                    ),
                )
            })
    }

    fn held_by(&self, d: &Doc) -> anyhow::Error {
        coded(
            Code::Locked,
            format!(
                "another host runs this:{} holds the lease {} in {} until {}; it is released when that run ends, or taken over once it expires if that run died",
                by(&d.holder),
                self.scope,
                self.store.identity(),
                rfc3339(d.expires_at)
            ),
        )
    }

    /// This holder's claim document for epoch `n` under tag `tag`.
    fn encode(&self, n: u64, tag: &str, released: bool) -> Result<Vec<u8>> {
        seal::encode(
            &Doc {
                schema: SCHEMA.into(),
                scope: self.scope.clone(),
                epoch: n,
                tag: tag.to_string(),
                holder: self.holder.clone(),
                acquired_at: self.acquired_at,
                expires_at: OffsetDateTime::now_utc() + self.duration,
                released,
            },
            self.trust.keys(),
        )
    }

    /// Claims epoch `n` for this holder (not released): `true` when the claim
    /// holds (no other claim at `n` or above is listed after it was written),
    /// and this run now holds epoch `n`; `false` when another run's claim
    /// competes (this one is then deleted).
    fn claim(&mut self, n: u64) -> Result<bool> {
        let sent = std::time::Instant::now();
        let tag = new_tag();
        let k = key(&self.scope, n, &tag);
        let bytes = self.encode(n, &tag, false)?;
        match self.store.put_new(&k, &bytes, &Vec::new()) {
            Ok(_) => {}
            // A tag drawn twice: as good as a competing claim.
            Err(e) if crate::store::is_already_exists(&e) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("failed to write the lease {k}")),
        }
        let listed = match self.listing() {
            Ok(l) => l,
            Err(e) => {
                // Unconfirmed, it must not look held until it expires.
                let _ = self.store.delete(&k);
                return Err(e.context(format!("failed to confirm the lease {k}")));
            }
        };
        if listed.iter().any(|c| c.epoch >= n && c.key != k) {
            let _ = self.store.delete(&k);
            return Ok(false);
        }
        self.epoch = n;
        self.claim = k;
        self.claimed = sent;
        Ok(true)
    }

    /// Every claim listed in the scope, newest epoch first; objects named
    /// above [`MAX_EPOCH`] are not claims and are left out.
    fn listing(&self) -> Result<Vec<Listed>> {
        let mut claims = self.listing_all()?;
        claims.retain(|c| c.epoch <= MAX_EPOCH);
        Ok(claims)
    }

    /// [`Lease::listing`] with the objects named above [`MAX_EPOCH`].
    fn listing_all(&self) -> Result<Vec<Listed>> {
        let prefix = format!("leases/{}/", self.scope);
        let mut claims: Vec<Listed> = self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| {
                let (epoch, tag) = claim_of(&self.scope, &o.key)?;
                let tag = tag.to_string();
                Some(Listed {
                    epoch,
                    tag,
                    key: o.key,
                    modified: o.modified,
                })
            })
            .collect();
        claims.sort_unstable_by(|a, b| b.epoch.cmp(&a.epoch).then_with(|| a.key.cmp(&b.key)));
        Ok(claims)
    }

    /// Lists the scope and reads the claims of the newest epoch that has a
    /// valid one.
    fn read(&self) -> Result<Seen> {
        let mut claims = self.listing_all()?;
        for c in claims.iter().filter(|c| c.epoch > MAX_EPOCH) {
            (self.warn)(&format!(
                "ignoring the lease object {} in {}: its epoch is above any a lease reaches ({MAX_EPOCH}), so bkp did not write it; remove it",
                c.key,
                self.store.identity()
            ));
        }
        claims.retain(|c| c.epoch <= MAX_EPOCH);
        let now = OffsetDateTime::now_utc();
        let mut newest: Option<Doc> = None;
        let mut unverified = None;
        for c in claims.iter().take(MAX_READS) {
            if newest.as_ref().is_some_and(|d| d.epoch != c.epoch) {
                break;
            }
            let bytes = match self.store.get_at_most(&c.key, crate::limits::LEASE) {
                Ok(b) => Ok(b),
                // Deleted meanwhile: a claim that lost, or an older epoch.
                Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => continue,
                // Larger than any claim: as one that does not verify.
                Err(e) if crate::exit::classify(&e) == Some(Code::Integrity) => {
                    Err(Unbelieved::Unverified(format!("{e:#}")))
                }
                Err(e) => return Err(e),
            };
            match bytes.and_then(|b| self.parse(&b, c)) {
                Ok(d) => {
                    if newest
                        .as_ref()
                        .is_none_or(|n| !n.holds(now) && d.holds(now))
                    {
                        newest = Some(d);
                    }
                }
                Err(Unbelieved::OutOfScope(why)) => (self.warn)(&format!(
                    "ignoring the lease object {} in {}: {why}",
                    c.key,
                    self.store.identity()
                )),
                Err(Unbelieved::Unverified(why)) => {
                    let until = c.modified.map(|m| m + self.duration);
                    match until {
                        Some(until) if until > now && unverified.is_none() => {
                            unverified = Some((c.key.clone(), until, why));
                        }
                        _ => (self.warn)(&format!(
                            "ignoring the lease object {} in {}: {why}",
                            c.key,
                            self.store.identity()
                        )),
                    }
                }
            }
        }
        Ok(Seen {
            claims,
            newest,
            unverified,
        })
    }

    fn parse(&self, bytes: &[u8], c: &Listed) -> std::result::Result<Doc, Unbelieved> {
        let what = format!("lease {}", c.key);
        let unverified = Unbelieved::Unverified;
        let opened =
            seal::open(bytes, &what, self.trust).map_err(|e| unverified(format!("{e:#}")))?;
        if self.trust.keys().is_some() && !opened.sealed {
            return Err(unverified(
                "it is not sealed, so it is not from this installation".into(),
            ));
        }
        // An old key (kept to decrypt) seals nothing believed: its claim counts
        // as one that does not verify (held while young, in case a host not yet
        // given the new key wrote it), never as held until the expiry it names.
        if let Some(by) = opened.sealer.as_deref() {
            if self.trust.keys().is_some() && !self.trust.seals_now(by) {
                return Err(unverified(format!(
                    "it is sealed by {by}, a key kept only to decrypt (old_keys)"
                )));
            }
        }
        let d: Doc = serde_json::from_value(opened.value)
            .map_err(|e| unverified(format!("it is not a lease document ({e})")))?;
        if d.schema != SCHEMA || d.scope != self.scope || d.epoch != c.epoch || d.tag != c.tag {
            return Err(unverified(format!(
                "it says schema {:?}, scope {:?}, epoch {}, tag {:?}: not the claim of its key",
                d.schema, d.scope, d.epoch, d.tag
            )));
        }
        let claim = crate::crypto::Claim {
            host: Some(&d.holder.host),
            kind: self.covers.kind,
            tigerbeetle_cluster: self.covers.tigerbeetle_cluster,
            ..Default::default()
        };
        self.trust
            .check_scope(opened.sealer.as_deref(), &claim, &what)
            .map_err(|e| Unbelieved::OutOfScope(format!("{e:#}")))?;
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Barrier, Mutex};
    use std::time::Duration;

    fn holder(host: &str, pid: u32) -> Holder {
        Holder {
            host: host.into(),
            pid,
            run: format!("run-{host}-{pid}"),
        }
    }

    fn quiet(_: &str) {}

    /// Tries to take lease `s` of `store` for `who`, warnings ignored.
    fn try_take<'a>(
        store: &'a dyn Store,
        trust: &'a Trust,
        who: Holder,
        duration: Duration,
    ) -> Result<Lease<'a>> {
        Lease::acquire(
            store,
            trust,
            ("s", Covers::default()),
            who,
            duration,
            &quiet,
        )
    }

    /// Takes lease `s` of `store` for `who`.
    fn take<'a>(
        store: &'a dyn Store,
        trust: &'a Trust,
        who: Holder,
        duration: Duration,
    ) -> Lease<'a> {
        try_take(store, trust, who, duration).unwrap()
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

    /// A pid no process has (beyond Linux's largest `pid_max`).
    const GONE: u32 = 1 << 23;

    #[test]
    fn a_run_that_outlived_its_lease_cannot_renew_it() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        let mut x = take(&store, &trust, holder("x", 1), Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(400));
        // Another host takes the expired lease over, and releases it: its claim
        // of epoch 1 goes, epoch 2 says released.
        let y = take(&store, &trust, holder("y", 2), Duration::from_secs(60));
        assert_eq!(y.epoch, 1);
        y.release();
        assert_eq!(epochs(&store), [2]);
        let e = x.renew().unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(
            format!("{e:#}").contains("expired while this run held it"),
            "{e:#}"
        );
        // Lost, it releases nothing: the released epoch 2 stays the newest.
        x.release();
        assert_eq!(epochs(&store), [2]);
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
        assert_eq!((x.epoch, y.epoch), (0, 1));
        // The successor moves on: epoch 2, and its claim of epoch 1 is gone.
        y.renew().unwrap();
        assert_eq!(epochs(&store), [2]);
        let e = x.renew().unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(format!("{e:#}").contains("was taken over by h"), "{e:#}");
        // The successor still holds it.
        y.renew().unwrap();
    }

    #[test]
    fn a_long_step_keeps_its_lease_alive() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        let mut x = take(&store, &trust, holder("x", 1), Duration::from_millis(1500));
        // Young: no request.
        x.keep_alive().unwrap();
        assert_eq!(x.epoch, 0);
        // Three times the lease's length, renewed as it goes: still held. (Each
        // step just over a third of the lease, so that a loaded machine may stall
        // the test for most of a second without the lease running out.)
        for _ in 0..9 {
            std::thread::sleep(Duration::from_millis(520));
            x.keep_alive().unwrap();
        }
        assert!(x.epoch >= 4, "renewed {} times", x.epoch);
        let e = try_take(&store, &trust, holder("y", 2), Duration::from_secs(60))
            .err()
            .expect("the lease is held");
        assert!(format!("{e:#}").contains("x (pid 1"), "{e:#}");
        x.renew().unwrap();
    }

    #[test]
    fn a_held_lease_of_an_earlier_build_is_honoured_and_then_cleared() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        let old = |expires_at: OffsetDateTime, released: bool| {
            seal::encode(
                &serde_json::json!({
                    "schema": SCHEMA, "scope": "s", "epoch": 7,
                    "holder": {"host": "old", "pid": 9, "run": "r"},
                    "acquired_at": rfc3339(OffsetDateTime::now_utc()),
                    "expires_at": rfc3339(expires_at), "released": released,
                }),
                None,
            )
            .unwrap()
        };
        let k = "leases/s/00000000000000000007.json";
        let held = old(OffsetDateTime::now_utc() + Duration::from_secs(60), false);
        store.put_new(k, &held, &Vec::new()).unwrap();
        let e = try_take(&store, &trust, holder("y", 2), Duration::from_secs(60))
            .err()
            .expect("the lease is held");
        assert!(format!("{e:#}").contains("old (pid 9"), "{e:#}");
        store.delete(k).unwrap();
        store
            .put_new(k, &old(OffsetDateTime::now_utc(), true), &Vec::new())
            .unwrap();
        let y = take(&store, &trust, holder("y", 2), Duration::from_secs(60));
        assert_eq!(y.epoch, 8);
        assert_eq!(epochs(&store), [8]);
    }

    /// What runs inside [`Racy`]'s first listing.
    type Racer = Box<dyn FnOnce(&dyn Store) + Send>;

    /// A store whose create-only writes are not atomic (as on some S3-compatible
    /// servers: a write that checked for the key before another's landed
    /// replaces it). It can run `racer` inside its first listing, between a
    /// run's look at the scope and its write; and hold its first `n` listings
    /// and then its first `n` writes until all of them are made, so that `n`
    /// runs look at the scope, then each writes before any of them lists again.
    struct Racy {
        inner: MemoryStore,
        racer: Mutex<Option<Racer>>,
        together: Option<Together>,
    }

    struct Together {
        n: usize,
        listed: (Barrier, AtomicUsize),
        written: (Barrier, AtomicUsize),
    }

    impl Together {
        fn new(n: usize) -> Together {
            let step = || (Barrier::new(n), AtomicUsize::new(0));
            Together {
                n,
                listed: step(),
                written: step(),
            }
        }

        /// Waits for the others at `step`, the first `n` times.
        fn wait(&self, step: &(Barrier, AtomicUsize)) {
            if step.1.fetch_add(1, Ordering::SeqCst) < self.n {
                step.0.wait();
            }
        }
    }

    impl Racy {
        fn new() -> Racy {
            Racy {
                inner: MemoryStore::new(),
                racer: Mutex::new(None),
                together: None,
            }
        }
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
            let written = self.inner.put_new(key, bytes, metadata);
            if let Some(t) = &self.together {
                t.wait(&t.written);
            }
            written
        }
        fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send>> {
            self.inner.open(key)
        }
        fn head(&self, key: &str) -> Result<Option<crate::store::ObjectInfo>> {
            self.inner.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
            let listed = self.inner.list(prefix)?;
            if let Some(t) = &self.together {
                t.wait(&t.listed);
            }
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
    fn a_run_that_claims_after_another_looked_takes_nothing_from_it() {
        let won = std::sync::Arc::new(Mutex::new(None));
        let racer_won = won.clone();
        let store = Racy::new();
        *store.racer.lock().unwrap() = Some(Box::new(move |store: &dyn Store| {
            let trust = Trust::none();
            let b = try_take(store, &trust, holder("b", 2), Duration::from_secs(60));
            // Dropped unreleased: it holds until it expires.
            *racer_won.lock().unwrap() = Some(b.map(|l| l.epoch).map_err(|e| format!("{e:#}")));
        }));
        let trust = Trust::none();
        // `a` lists an empty scope; `b` takes the lease before `a` writes epoch 0.
        let a = try_take(&store, &trust, holder("a", 1), Duration::from_secs(60));
        assert_eq!(*won.lock().unwrap(), Some(Ok(0)), "the racer holds epoch 0");
        let e = a.err().expect("only one of the two holds the lease");
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(format!("{e:#}").contains("b (pid 2"), "{e:#}");
    }

    #[test]
    fn runs_that_claim_at_the_same_instant_never_both_hold() {
        for _ in 0..20 {
            let mut store = Racy::new();
            store.together = Some(Together::new(3));
            let trust = Trust::none();
            let held: Vec<_> = std::thread::scope(|s| {
                let runs: Vec<_> = (1..=3)
                    .map(|i| {
                        let (store, trust) = (&store, &trust);
                        s.spawn(move || {
                            let who = holder(&format!("h{i}"), i);
                            try_take(store, trust, who, Duration::from_secs(60))
                                .map(|l| l.epoch)
                                .map_err(|e| format!("{e:#}"))
                        })
                    })
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let holders = held.iter().filter(|r| r.is_ok()).count();
            assert!(holders <= 1, "{held:?}");
            for e in held.iter().filter_map(|r| r.as_ref().err()) {
                assert!(
                    e.contains("holds the lease") || e.contains("keeps changing hands"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn a_claim_this_host_cannot_verify_counts_as_held_while_young() {
        use crate::crypto::{Keyring, MasterKey};
        // A directory: its objects have times, as on S3.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::local::LocalStore::new(dir.path()).unwrap();
        let ring = |b: u8| Keyring::new(MasterKey::from_bytes([b; 32]), Vec::new());
        let (ours, theirs) = (
            Trust::new(Some(ring(1)), None, vec![]),
            Trust::new(Some(ring(2)), None, vec![]),
        );
        // Another host, sealing with a key this one lacks, holds the lease.
        let _x = take(&store, &theirs, holder("x", 1), Duration::from_secs(60));
        let e = try_take(&store, &ours, holder("y", 2), Duration::from_secs(60))
            .err()
            .expect("an unverifiable young claim is held");
        assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
        assert!(format!("{e:#}").contains("cannot verify"), "{e:#}");
        // Old enough, such an object is ignored: it blocks nothing for good.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::local::LocalStore::new(dir.path()).unwrap();
        let _x = take(&store, &theirs, holder("x", 1), Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1500));
        let y = take(&store, &ours, holder("y", 2), Duration::from_secs(1));
        assert_eq!(y.epoch, 1);
    }

    /// A write-only host's signer may hold the leases its scope covers, and no
    /// other: a stolen host's key must not stall another host's chain, even for
    /// one lease.
    #[test]
    fn a_signers_claim_holds_only_within_its_scope() {
        use crate::kinds::Kind;
        let (host, reader, _) = crate::manifest::seal::tests::host_and_scoped_reader();
        let (host, reader) = (
            Trust::new(Some(host), None, vec![]),
            Trust::new(Some(reader), None, vec![]),
        );
        // The epoch a lease was taken at, and the warnings on the way.
        let take_as = |store: &MemoryStore, trust: &Trust, who: Holder, covers: Covers| {
            let warned = Mutex::new(Vec::<String>::new());
            let warn = |w: &str| warned.lock().unwrap().push(w.to_string());
            let minute = Duration::from_secs(60);
            let got =
                Lease::acquire(store, trust, ("s", covers), who, minute, &warn).map(|l| l.epoch);
            (got, warned.into_inner().unwrap())
        };
        // The signer's scope: host pg2, kind postgres (PostgreSQL system 11).
        let postgres = Covers {
            kind: Some(Kind::Postgres),
            tigerbeetle_cluster: None,
        };
        let cluster = Covers {
            kind: Some(Kind::Tigerbeetle),
            tigerbeetle_cluster: Some(5),
        };
        for (covers, who, within) in [
            (postgres, "pg2", true),
            (cluster, "pg2", false),
            (postgres, "tb1", false),
        ] {
            let store = MemoryStore::new();
            let (held, _) = take_as(&store, &host, holder(who, 1), covers);
            assert_eq!(held.unwrap(), 0);
            let (got, warned) = take_as(&store, &reader, holder("keyholder", 2), covers);
            if within {
                let e = got.expect_err("a claim within the signer's scope holds");
                assert_eq!(crate::exit::classify(&e), Some(Code::Locked), "{e:#}");
            } else {
                assert_eq!(got.unwrap(), 1, "a claim outside the scope is ignored");
                assert!(
                    warned.iter().any(|w| w.contains("does not include")),
                    "{warned:?}"
                );
            }
        }
    }

    /// A claim sealed by an old key (kept to decrypt, perhaps leaked) does not
    /// hold until the expiry it names: once older than a lease it is ignored.
    #[test]
    fn an_old_keys_claim_holds_no_longer_than_a_lease() {
        use crate::crypto::{Keyring, MasterKey};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::local::LocalStore::new(dir.path()).unwrap();
        let old = Trust::new(
            Some(Keyring::new(MasterKey::from_bytes([1; 32]), vec![])),
            None,
            vec![],
        );
        let rotated = Keyring::new(
            MasterKey::from_bytes([2; 32]),
            vec![MasterKey::from_bytes([1; 32])],
        );
        let now = Trust::new(Some(rotated), None, vec![]);
        let _planted = take(&store, &old, holder("x", 1), Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(1500));
        let y = take(&store, &now, holder("y", 2), Duration::from_secs(1));
        assert_eq!(y.epoch, 1);
    }

    #[test]
    fn claims_are_read_only_from_their_own_keys() {
        let k = "leases/s/00000000000000000042-0123456789abcdef.json";
        assert_eq!(claim_of("s", k), Some((42, "0123456789abcdef")));
        assert_eq!(key("s", 42, "0123456789abcdef"), k);
        // An earlier build's key.
        assert_eq!(
            claim_of("s", "leases/s/00000000000000000042.json"),
            Some((42, ""))
        );
        assert_eq!(claim_of("s", "leases/s/42-0123456789abcdef.json"), None);
        assert_eq!(claim_of("t", k), None);
        for bad in [
            "leases/s/0000000000000000004x-0123456789abcdef.json",
            "leases/s/00000000000000000042-0123456789ABCDEF.json",
            "leases/s/00000000000000000042-.json",
            "leases/s/00000000000000000042-0123.json",
            "leases/s/99999999999999999999-0123456789abcdef.json",
        ] {
            assert_eq!(claim_of("s", bad), None, "{bad}");
        }
        assert!(claim_of("s", &key("s", 1, &new_tag())).is_some());
    }

    /// Released claims (valid, unsealed: no keys configured) planted at the
    /// top of the epochs: the next claim would wrap, or there would be none.
    #[test]
    fn claims_planted_at_the_top_of_the_epochs_neither_wrap_nor_block() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        let planted = |epoch: u64| {
            let doc = seal::encode(
                &serde_json::json!({
                    "schema": SCHEMA, "scope": "s", "epoch": epoch, "tag": "",
                    "holder": {"host": "z", "pid": 9, "run": "r"},
                    "acquired_at": rfc3339(OffsetDateTime::now_utc()),
                    "expires_at": rfc3339(OffsetDateTime::now_utc()), "released": true,
                }),
                None,
            )
            .unwrap();
            let k = format!("leases/s/{epoch:020}.json");
            store.put_new(&k, &doc, &Vec::new()).unwrap();
            k
        };
        let top = planted(u64::MAX - 1);
        let warned = Mutex::new(Vec::new());
        let warn = |w: &str| warned.lock().unwrap().push(w.to_string());
        let who = holder("y", 2);
        let mut y = Lease::acquire(
            &store,
            &trust,
            ("s", Covers::default()),
            who,
            Duration::from_secs(60),
            &warn,
        )
        .unwrap();
        assert_eq!(y.epoch, 0);
        y.renew().unwrap();
        y.release();
        assert!(
            warned.lock().unwrap().iter().any(|w| w.contains(&top)),
            "{:?}",
            warned.lock().unwrap()
        );
        let max = planted(u64::MAX);
        let mut y = take(&store, &trust, holder("y", 2), Duration::from_secs(60));
        assert_eq!(y.epoch, 3);
        y.renew().unwrap();
        // Neither is deleted: they are not bkp's, and a warning names them.
        assert!(store.head(&top).unwrap().is_some() && store.head(&max).unwrap().is_some());

        // A genuine lease at the last epoch is refused, clearly, not wrapped.
        let store = MemoryStore::new();
        let mut z = take(&store, &trust, holder("z", 3), Duration::from_secs(60));
        z.epoch = MAX_EPOCH;
        let e = z.renew().unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Integrity), "{e:#}");
        assert!(
            format!("{e:#}").contains("epochs of s are exhausted"),
            "{e:#}"
        );
        z.release();
    }
}

//! `bkp restore --kind postgres --at T`: a base backup replayed to T from the
//! WAL archive, and proven there.
//!
//! After the base backup is unpacked and checked (`pgbase.rs`), PostgreSQL
//! itself replays the archived WAL it needs up to T: bkp starts the restored
//! server on a private Unix socket, no TCP, with a private configuration
//! (`recovery_target_time = T`, `recovery_target_action = 'promote'`, a
//! `restore_command` that copies from a private directory, archiving off), and
//! watches its log. Meanwhile that WAL is fetched and verified into the
//! directory, in the order the server asks for it (see `wal.rs`: nothing
//! reaches PostgreSQL unless its content matches its sealed name); the
//! `restore_command` waits for a file bkp is still fetching. The restore
//! succeeds only when the server says it stopped at the target (`recovery
//! stopping before commit …`, the first transaction committed after T) and
//! was promoted: every transaction committed at or before T is in, none
//! after. A server that reaches the end of the archive
//! first fails the restore, naming the newest archived segment. Then the server
//! is shut down cleanly, `recovery.signal` is taken out again, and the
//! directory is put in place: started, it is a new timeline, as it was at T.
//!
//! The backup's own configuration is not run: it may come from a forged backup
//! or a hostile database superuser (`ALTER SYSTEM`), and this host reads bkp's
//! keys. PostgreSQL reads only files bkp wrote (its `config_file`, and a
//! `postgresql.auto.conf` of bkp's own: the backup's is set aside first, see
//! [`super::pgconf::set_aside_configuration`]), and every setting that runs a
//! command, loads a library, or writes a file outside the data directory is
//! set on the command line, which wins over any file ([`DISARMED`]).
//!
//! The server runs as bkp's own user: PostgreSQL refuses root, so the restore
//! runs as the server's user (`sudo -u postgres bkp restore …`), who can read
//! bkp's configuration and keys anyway (it runs `archive_command`).

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use super::Source;
use crate::exit::{coded, Code};
use crate::manifest::wal::{self, FileKind, Stored};
use crate::manifest::Manifest;
use crate::units::rfc3339;

/// Segments archived up to this long after T are fetched: the segment holding
/// the first commit after T is archived after it, and the store's clock may
/// differ from the server's.
const CLOCK_MARGIN: Duration = Duration::from_secs(15 * 60);

/// What bkp's recovery server is started with, on its command line (which wins
/// over every configuration file): nothing that runs a command (`*_command`,
/// the SSL passphrase command), loads a library (`*_preload_libraries`, JIT, a
/// library path), writes outside the data directory (`external_pid_file`), or
/// starts work of its own after promotion (autovacuum, logical replication
/// workers, whose triggers run as superuser); the socket for bkp's user only.
/// `restore_command` and the recovery target are set beside these.
const DISARMED: &[(&str, &str)] = &[
    ("archive_mode", "off"),
    ("archive_command", ""),
    ("archive_cleanup_command", ""),
    ("recovery_end_command", ""),
    ("ssl", "off"),
    ("ssl_passphrase_command", ""),
    ("shared_preload_libraries", ""),
    ("local_preload_libraries", ""),
    ("session_preload_libraries", ""),
    ("dynamic_library_path", "$libdir"),
    ("jit", "off"),
    ("jit_provider", "llvmjit"),
    ("external_pid_file", ""),
    ("autovacuum", "off"),
    ("max_logical_replication_workers", "0"),
    ("unix_socket_permissions", "0700"),
];

/// What the recovery reached, from the server's own log.
#[derive(Debug, Clone)]
pub struct Reached {
    /// The server's line naming where it stopped (`recovery stopping before
    /// commit of transaction 754, time …`); none when it replayed to the end.
    pub stop: Option<String>,
    /// The commit time of the last transaction replayed, as the server wrote it.
    pub last_commit: Option<String>,
    /// Archived files fetched and verified.
    pub files: usize,
    pub bytes: u64,
    /// The timeline the promoted server started.
    pub timeline: Option<String>,
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a path that cannot go into PostgreSQL's `restore_command`.
fn quotable(paths: &[&Path]) -> Result<()> {
    for p in paths {
        let Some(text) = p.to_str() else {
            return Err(coded(
                Code::Config,
                format!(
                    "{}: a path that is not UTF-8 cannot go into PostgreSQL's restore_command; choose another work_dir or target",
                    p.display()
                ),
            ));
        };
        if text.contains(['\'', '"', '\\', '\n', '%']) {
            return Err(coded(
                Code::Config,
                format!(
                    "{text}: a path with quotes, backslashes or % cannot go into PostgreSQL's restore_command; choose another work_dir or target"
                ),
            ));
        }
    }
    Ok(())
}

/// Marks the new timeline's history file (`timeline`, as the server logged
/// it) for archiving: PostgreSQL marks it only when archiving is on, and it
/// was off here. Marked now, the server archives it once its operator turns
/// archiving on, so that later restores know the branch (and never choose its
/// timeline id again).
fn mark_history(dir: &Path, timeline: Option<&str>) -> Result<()> {
    if let Some(tli) = timeline.and_then(|t| t.parse::<u32>().ok()) {
        let history = format!("{tli:08X}.history");
        if dir.join("pg_wal").join(&history).exists() {
            let ready = dir
                .join("pg_wal/archive_status")
                .join(format!("{history}.ready"));
            fs::write(&ready, b"")
                .with_context(|| format!("failed to create {}", ready.display()))?;
        }
    }
    Ok(())
}

/// Where base backup `m`'s WAL starts (its system, first segment and segment
/// size), or why it cannot be replayed to a point in time.
pub fn wal_start(m: &Manifest) -> Result<(u64, crate::manifest::wal::WalName, u64)> {
    crate::manifest::postgres::wal_start(m).ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "base backup {} records no WAL start bkp can use (an older bkp took it, or it records a segment size PostgreSQL cannot have, as bkp did of PostgreSQL 10): restore it without --at, or take a new base backup (bkp snapshot --kind postgres) to recover to later points in time",
                m.id
            ),
        )
    })
}

/// Replays the archived WAL of base backup `m` (unpacked, checked, in `dir`)
/// to `at`, with `postgres` from the directory of `verifier`, and proves it.
pub fn recover(
    src: &Source,
    m: &Manifest,
    dir: &Path,
    at: Option<OffsetDateTime>,
    verifier: &Path,
    scratch: &Path,
) -> Result<Reached> {
    let (system, start, segment_size) = wal_start(m)?;
    let postgres = verifier.with_file_name("postgres");
    // The server resolves relative paths from its data directory.
    let scratch = &std::path::absolute(scratch)
        .with_context(|| format!("failed to resolve {}", scratch.display()))?;
    let wal_dir = scratch.join("wal");
    let sock = scratch.join("sock");
    for d in [&wal_dir, &sock] {
        fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
    }
    quotable(&[wal_dir.as_path(), dir])?;

    // 1. The archive's files from the backup's start to just past T: is it
    // whole?
    let all = wal::archive::archived(src.store, system)?;
    let until = at.map_or(OffsetDateTime::now_utc() + CLOCK_MARGIN, |t| {
        t + CLOCK_MARGIN
    });
    let wanted = to_fetch(&all, start.position, until);
    let archive = (system, segment_size, start.position);
    refuse_partial(src, archive, &all, at)?;

    // 2. PostgreSQL replays them with settings of bkp's own only, each file as
    // soon as it is fetched and verified (its restore_command waits for it).
    src.ui.detail(&format!(
        "fetching {} archived WAL files of system {system} from {} while PostgreSQL replays them",
        wanted.len(),
        src.store.identity()
    ));
    prepare_recovery(dir, scratch)?;
    let names: String = wanted.iter().map(|s| format!("{}\n", s.name)).collect();
    for (file, text) in [(WANTED, names.as_bytes()), (FETCHING, b"")] {
        let p = wal_dir.join(file);
        fs::write(&p, text).with_context(|| format!("failed to write {}", p.display()))?;
    }
    let fetching = Fetching(wal_dir.join(FETCHING));
    let max = segment_size.min(crate::limits::WAL_SEGMENT_MAX);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let clock = Instant::now();
    let (replayed, fetched) = std::thread::scope(|scope| {
        let fetcher = scope.spawn(|| {
            let _over = fetching;
            let got = fetch_wanted(src, system, &all, &wanted, &wal_dir, max, &stop);
            (got, clock.elapsed())
        });
        let replayed = replay(src, &postgres, dir, (scratch, &wal_dir, &sock), at, clock);
        // Interrupted, or no server: nothing will read the rest. A server that
        // exited is judged once every file is looked at (junk changes what
        // its stop means).
        if replayed.is_err() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let fetched = fetcher.join().unwrap_or_else(|_| {
            (
                Err(anyhow::anyhow!("a thread fetching archived WAL panicked")),
                Duration::ZERO,
            )
        });
        (replayed, fetched)
    });
    // An interrupt (which may reach the server first, and make it exit), or
    // a server that did not start; then a file that could not be fetched,
    // whatever the server made of its absence.
    if crate::interrupt::received().is_some() {
        return Err(interrupted());
    }
    let replayed = replayed?;
    let (fetched, took) = fetched;
    let (bytes, junk) = fetched?;
    src.ui.detail(&format!(
        "fetched and verified them in {:.1}s",
        took.as_secs_f64()
    ));
    let all: Vec<Stored> = all
        .into_iter()
        .filter(|s| !junk.contains(&s.name))
        .collect();
    if !junk.is_empty() {
        refuse_partial(src, archive, &all, at)?;
    }
    let summary = wal::summarize(&all, segment_size, Some(start.position));
    let newest = summary
        .timelines
        .values()
        .filter_map(|runs| runs.last().map(|r| r.last.clone()))
        .max();
    let (ready, mut server) = match replayed {
        Replayed::Ready(text, server) => (text, server),
        Replayed::Exited(text, status) => {
            let gap = summary
                .gaps()
                .into_iter()
                .next()
                .and_then(|(_, after, before)| {
                    wal::missing(&after, &before, segment_size).map(|(first, n)| (first, n, after))
                });
            return Err(failed(&text, status, at, newest.as_deref(), gap, system));
        }
    };
    src.ui
        .timed(|| "PostgreSQL shut down".into(), || server.stop());
    let line = |needle: &str| {
        ready
            .lines()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().trim_start_matches("LOG:").trim().to_string())
    };
    let stop = line("recovery stopping");
    if let (None, Some(at)) = (&stop, at) {
        return Err(coded(
            Code::NotFound,
            format!(
                "PostgreSQL replayed all of the archive without reaching {}: the archive ends before that time{}. Nothing was restored; restore to an earlier time",
                rfc3339(at),
                newest.map(|n| format!(" (its newest segment is {n})")).unwrap_or_default()
            ),
        ));
    }
    let last_commit = line("last completed transaction was at log time").map(|l| {
        l.rsplit("log time")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    if let (Some(t), Some(at)) = (last_commit.as_deref().and_then(parse_pg_time), at) {
        if t > at {
            return Err(coded(
                Code::Integrity,
                format!(
                    "PostgreSQL replayed a transaction committed at {}, after {}: nothing was restored",
                    rfc3339(t),
                    rfc3339(at)
                ),
            ));
        }
    }
    let timeline = line("selected new timeline ID").map(|l| {
        l.rsplit("ID:")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    mark_history(dir, timeline.as_deref())?;
    let signal = dir.join("recovery.signal");
    if signal.exists() {
        fs::remove_file(&signal)
            .with_context(|| format!("failed to remove {}", signal.display()))?;
    }
    Ok(Reached {
        stop,
        last_commit,
        files: wanted.len(),
        bytes,
        timeline,
    })
}

/// Names of the files the restore fetches, one a line, in the directory they
/// are fetched to: the restore_command waits for these only.
const WANTED: &str = ".wanted";
/// There while fetching goes on: once it is gone (fetching done, failed or
/// stopped), a file still missing never comes. Removed rather than written
/// at the end, so that a full disk cannot keep the server waiting.
const FETCHING: &str = ".fetching";

/// Removes [`FETCHING`] when dropped, however fetching ended.
struct Fetching(std::path::PathBuf);

impl Drop for Fetching {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// How the recovery server's replay ended.
enum Replayed {
    /// It opened: its log, and the server, still running.
    Ready(String, Running),
    /// It exited first: its log, and how it exited.
    Exited(String, std::process::ExitStatus),
}

/// Refuses an archive (`all`) that cannot take a replay from `start` to `at`
/// (to its end when `None`): newest WAL lost (see [`refuse_lost_wal`]), or a
/// gap in a replay to the end, which PostgreSQL would take for the end.
fn refuse_partial(
    src: &Source,
    (system, segment_size, start): (u64, u64, u64),
    all: &[Stored],
    at: Option<OffsetDateTime>,
) -> Result<()> {
    let summary = wal::summarize(all, segment_size, Some(start));
    refuse_lost_wal(src, (system, segment_size), all, &summary, at)?;
    // Replayed to its end (a drill), the archive is proven whole only without
    // gaps: PostgreSQL would take the first missing segment for the end.
    if at.is_none() {
        if let Some((_, after, before)) = summary.gaps().into_iter().next() {
            let first = wal::missing(&after, &before, segment_size)
                .map_or(before.clone(), |(first, _)| first);
            return Err(coded(
                Code::Integrity,
                format!(
                    "WAL segment {first} is missing from the archive of system {system} (after {after}, before {before}): a replay to the end would stop there. Take a new base backup now: no recovery can pass it"
                ),
            ));
        }
    }
    Ok(())
}

/// Starts PostgreSQL on `dir` to recover to `at` with settings of bkp's own
/// only (its files in `scratch`, the WAL from `wal_dir`, its socket in
/// `sock`), and waits until it opens or exits.
fn replay(
    src: &Source,
    postgres: &Path,
    dir: &Path,
    (scratch, wal_dir, sock): (&Path, &Path, &Path),
    at: Option<OffsetDateTime>,
    clock: Instant,
) -> Result<Replayed> {
    let log_path = scratch.join("postgres.log");
    let log = fs::File::create(&log_path)?;
    let mut c = crate::child::command(postgres, &[]);
    c.arg("-D").arg(dir);
    for (k, v) in [
        (
            "config_file",
            scratch.join("postgresql.conf").display().to_string(),
        ),
        (
            "hba_file",
            scratch.join("pg_hba.conf").display().to_string(),
        ),
        (
            "ident_file",
            scratch.join("pg_ident.conf").display().to_string(),
        ),
        ("unix_socket_directories", sock.display().to_string()),
        ("listen_addresses", String::new()),
        ("port", "5432".into()),
        ("hot_standby", "off".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("log_line_prefix", String::new()),
        ("lc_messages", "C".into()),
    ]
    .into_iter()
    .chain(DISARMED.iter().map(|(k, v)| (*k, v.to_string())))
    .chain(recovery_settings(dir, wal_dir, at)?)
    {
        c.arg("-c").arg(format!("{k}={v}"));
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let child = c
        .spawn()
        .with_context(|| format!("failed to start {}", postgres.display()))?;
    let mut server = Running(Some(child));
    let mut note = Duration::from_secs(5);
    loop {
        // First: a signal to the whole group (systemd's stop) may have ended
        // the server too, which is no failure of its own.
        if crate::interrupt::received().is_some() {
            server.stop();
            return Err(interrupted());
        }
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("database system is ready to accept connections") {
            src.ui.detail(&format!(
                "PostgreSQL replayed the archive and opened in {:.1}s",
                clock.elapsed().as_secs_f64()
            ));
            return Ok(Replayed::Ready(text, server));
        }
        if let Some(status) = server.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            server.0 = None;
            return Ok(Replayed::Exited(text, status));
        }
        if clock.elapsed() > note {
            note += Duration::from_secs(5);
            src.ui.detail(&format!(
                "PostgreSQL is replaying the archive ({:.0}s)",
                clock.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupted() -> anyhow::Error {
    coded(
        Code::Interrupted,
        "interrupted while PostgreSQL replayed the archive: nothing was restored",
    )
}

/// What a server that exited during recovery said, as an error.
fn failed(
    log: &str,
    status: std::process::ExitStatus,
    at: Option<OffsetDateTime>,
    newest: Option<&str>,
    gap: Option<(String, u64, String)>,
    system: u64,
) -> anyhow::Error {
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("FATAL:") || l.starts_with("PANIC:") || l.starts_with("ERROR:"))
        .take(3)
        .collect();
    let said = if said.is_empty() {
        log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
    } else {
        said.join(" / ")
    };
    let reached_end = log.contains("recovery ended before configured recovery target was reached");
    if let (true, Some((first, n, after))) = (reached_end, &gap) {
        return coded(
            Code::NotFound,
            format!(
                "WAL segment {first} is missing from the archive of system {system} ({} after {after}): PostgreSQL replayed up to it and stopped before {} ({said}). Nothing was restored. Restore to a time before the gap, and take a new base backup now: no recovery can pass it",
                crate::units::count(*n, "segment"),
                at.map(rfc3339).unwrap_or_default(),
            ),
        );
    }
    if reached_end {
        return coded(
            Code::NotFound,
            format!(
                "the WAL archive of system {system} ends before {} (or has a gap before it){}: PostgreSQL stopped ({said}). Nothing was restored; `bkp verify` shows gaps, or restore to an earlier time",
                at.map(rfc3339).unwrap_or_default(),
                newest.map(|n| format!("; its newest segment is {n}")).unwrap_or_default()
            ),
        );
    }
    if log.contains("restore_command") && log.contains("was terminated")
        || log.contains("could not restore file")
    {
        return coded(
            Code::Integrity,
            format!("PostgreSQL could not read the archived WAL ({said}); nothing was restored"),
        );
    }
    anyhow::anyhow!("PostgreSQL stopped during recovery ({status}): {said}. Nothing was restored")
}

/// Refuses an archive (`all`, summarized) that lost its newest WAL: on a
/// timeline whose newest segment was archived before the target (`at`, or
/// now), a head records a later segment the archive no longer holds. The
/// newest segments were deleted (or hidden), and recovery would stop at the
/// archive's end, short of the target, as if that were all. Each timeline is
/// looked at alone (another timeline's newer objects hide nothing).
fn refuse_lost_wal(
    src: &Source,
    (system, segment_size): (u64, u64),
    all: &[Stored],
    summary: &wal::Summary,
    at: Option<OffsetDateTime>,
) -> Result<()> {
    let cutoff = at.unwrap_or_else(OffsetDateTime::now_utc);
    for runs in summary.timelines.values() {
        let Some(newest) = runs.last().map(|r| r.last.as_str()) else {
            continue;
        };
        let Some(w) = wal::parse_name(newest) else {
            continue;
        };
        let archived = all
            .iter()
            .filter(|s| s.name == newest)
            .filter_map(|s| s.modified)
            .max();
        // Archived after the target: it holds what recovery needs.
        if archived.is_none_or(|t| t > cutoff) {
            continue;
        }
        let next = wal::name_at(w.timeline, wal::next_position(w.position, segment_size));
        let (head, ignored) =
            crate::manifest::head::wal_beyond(src.store, src.trust, system, &next)?;
        for i in &ignored {
            src.ui.warn(i);
        }
        let Some(h) = head else {
            continue;
        };
        // Archived since the listing (a push racing this restore): not lost.
        if !wal::archive::candidates(src.store, system, &h.head)?.is_empty() {
            continue;
        }
        return Err(coded(
            Code::Integrity,
            format!(
                "the WAL archive of system {system} in {} ends at {newest} on its timeline, but bkp recorded it holding {} (archived {} by {}): WAL was deleted, and recovery would stop short of the target as if that were all. Find out who deleted it; restore to a time before {} was archived, or from a copy that holds it (--store NAME)",
                src.store.identity(),
                crate::ui::printable(&h.head),
                crate::units::rfc3339(h.recorded_at),
                crate::ui::printable(&h.host),
                archived.map_or_else(|| next.clone(), |t| format!("{next} (after {})", crate::units::rfc3339(t))),
            ),
        ));
    }
    Ok(())
}

/// Fetches every file of `wanted` (of `system`) into `dir`, each verified and
/// at most `max` bytes (see [`wal::archive::fetch_listed`]), several at a
/// time (the store's parallelism, as pgBackRest's `archive-get` queue does),
/// in `wanted`'s order: each file is checked before it appears in `dir`, for
/// the server to read. An error, or `stop` set by the caller, stops the rest;
/// the earliest error in `wanted`'s order is reported. Returns the bytes
/// fetched, and the names left out as junk past the archive's end.
fn fetch_wanted(
    src: &Source,
    system: u64,
    all: &[Stored],
    wanted: &[Stored],
    dir: &Path,
    max: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(u64, std::collections::BTreeSet<String>)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (store, trust) = (src.store, src.trust);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = store.parallelism().clamp(1, 8).min(wanted.len()).max(1);
    let fetched: Vec<(usize, Result<Option<u64>>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(s) = wanted.get(i) else { break };
                        let dest = dir.join(&s.name);
                        let r = wal::archive::fetch_listed(
                            store, trust, system, all, &s.name, &dest, max,
                        );
                        failed.fetch_or(r.is_err(), Ordering::Relaxed);
                        done.push((i, r));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        0,
                        Err(anyhow::anyhow!("a thread fetching archived WAL panicked")),
                    )]
                })
            })
            .collect()
    });
    let mut fetched = fetched;
    fetched.sort_by_key(|(i, _)| *i);
    let mut bytes = 0;
    let mut junk = std::collections::BTreeSet::new();
    for (i, r) in fetched {
        match r? {
            Some(n) => bytes += n,
            None => {
                junk.insert(wanted[i].name.clone());
            }
        }
    }
    Ok((bytes, junk))
}

/// The archive files recovery from `start` to `until` may ask for: every
/// timeline history file, and per timeline the segments from `start` on that
/// were archived by `until`, and the one after them. In the order the server
/// asks for them (they are fetched in it while it replays): the history files
/// first, then by position, the newest timeline first.
pub fn to_fetch(all: &[Stored], start: u64, until: OffsetDateTime) -> Vec<Stored> {
    let mut names = std::collections::BTreeSet::new();
    let mut out: Vec<Stored> = Vec::new();
    for h in all.iter().filter(|s| s.wal.kind == FileKind::History) {
        if names.insert(h.name.as_str()) {
            out.push(h.clone());
        }
    }
    let mut segments: Vec<&Stored> = all
        .iter()
        .filter(|s| s.wal.kind == FileKind::Segment && s.wal.position >= start)
        .collect();
    segments.sort_by_key(|s| (s.wal.timeline, s.wal.position));
    let mut past: std::collections::BTreeSet<u32> = Default::default();
    let histories = out.len();
    for s in segments {
        if past.contains(&s.wal.timeline) {
            continue;
        }
        if s.modified.is_some_and(|m| m > until) {
            past.insert(s.wal.timeline);
        }
        if names.insert(s.name.as_str()) {
            out.push(s.clone());
        }
    }
    out[histories..].sort_by_key(|s| (s.wal.position, std::cmp::Reverse(s.wal.timeline)));
    out
}

/// `2026-11-23 10:00:01.234567+00` (PostgreSQL's log format) → a time.
fn parse_pg_time(text: &str) -> Option<OffsetDateTime> {
    let t = text.trim();
    let (main, zone) = t.rsplit_once(['+', '-']).filter(|(_, z)| z.len() <= 5)?;
    let sign = if t[main.len()..].starts_with('-') {
        "-"
    } else {
        "+"
    };
    let zone = match zone.len() {
        2 => format!("{zone}:00"),
        4 => format!("{}:{}", &zone[..2], &zone[2..]),
        5 => zone.to_string(),
        _ => return None,
    };
    let iso = format!("{}{sign}{zone}", main.replacen(' ', "T", 1));
    OffsetDateTime::parse(&iso, &time::format_description::well_known::Rfc3339).ok()
}

/// Copies archive file `%f` from `wal_dir`, where bkp fetches and verifies
/// them while the server replays: a file bkp fetches ([`WANTED`]) is waited
/// for until it is there or fetching is over ([`FETCHING`] gone); any other
/// (the server looks for timelines that do not exist) is missing at once.
/// The directory is absolute (the server runs it from the data directory)
/// and single-quoted ([`quotable`] refuses quotes in it).
/// `bkp` is the pid of the process fetching: once it is gone (killed),
/// nothing will come, and an exit above 125 makes the server stop recovery
/// rather than take the file for the archive's end.
fn restore_command(wal_dir: &Path, bkp: u32) -> String {
    let d = wal_dir.display();
    format!(
        "f='{d}/%f'; if grep -qxF '%f' '{d}/{WANTED}'; then while [ ! -e \"$f\" ] && [ -e '{d}/{FETCHING}' ]; do kill -0 {bkp} 2>/dev/null || exit 255; sleep 0.02; done; fi; exec cp \"$f\" '%p'"
    )
}

/// The recovery settings for `at` (none: to the end of the archive), for the
/// server's command line; with PostgreSQL 15 on, `archive_library` too (older
/// servers refuse the name; their archiver is off anyway).
fn recovery_settings(
    dir: &Path,
    wal_dir: &Path,
    at: Option<OffsetDateTime>,
) -> Result<Vec<(&'static str, String)>> {
    let mut out = vec![
        (
            "restore_command",
            restore_command(wal_dir, std::process::id()),
        ),
        ("recovery_target_timeline", "latest".into()),
    ];
    if let Some(at) = at {
        let at = at
            .to_offset(time::UtcOffset::UTC)
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
            ))?;
        out.push(("recovery_target_time", at));
        out.push(("recovery_target_action", "promote".into()));
    }
    // The server refuses a data directory of another version than its own,
    // whatever this file says.
    let major = fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    if major.is_some_and(|m| m >= 15) {
        out.push(("archive_library", String::new()));
    }
    Ok(out)
}

/// Makes data directory `dir` recover from the archive, with configuration
/// files of bkp's own in `scratch` (the backup's own are set aside).
fn prepare_recovery(dir: &Path, scratch: &Path) -> Result<()> {
    super::pgconf::set_aside_configuration(dir)?;
    // A standby.signal (none in a backup bkp took) would make the server wait
    // for a primary forever instead of replaying the archive.
    let standby = dir.join("standby.signal");
    if standby.exists() {
        fs::remove_file(&standby)
            .with_context(|| format!("failed to remove {}", standby.display()))?;
    }
    fs::write(dir.join("recovery.signal"), b"")?;
    for (name, text) in [
        ("postgresql.conf", ""),
        ("pg_hba.conf", "local all all trust\n"),
        ("pg_ident.conf", ""),
    ] {
        fs::write(scratch.join(name), text)?;
    }
    Ok(())
}

/// The recovery server; stopped (fast shutdown, then immediate) when dropped.
struct Running(Option<Child>);

impl Running {
    fn stop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        for (signal, wait) in [(libc::SIGINT, 120), (libc::SIGQUIT, 10)] {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions; the child
                // has not been waited for, so its pid is not reused.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
            // Not reaped while it runs: the next signal reaches the server,
            // never a process that took its pid.
            if let Ok(Some(_)) = crate::child::wait_for(&mut child, Duration::from_secs(wait)) {
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Refuses to run the recovery server as root, before anything is downloaded.
pub fn check_user() -> Result<()> {
    if effective_uid() == 0 {
        return Err(coded(
            Code::Config,
            "PostgreSQL does not run as root, and --at starts it to replay the WAL archive: run the restore as the server's user (sudo -u postgres bkp …), who reads bkp's configuration and keys for archive_command anyway",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_that_runs_code_is_overridden() {
        let set: Vec<&str> = DISARMED.iter().map(|(k, _)| *k).collect();
        for name in [
            "archive_command",
            "archive_cleanup_command",
            "recovery_end_command",
            "ssl_passphrase_command",
            "shared_preload_libraries",
            "local_preload_libraries",
            "session_preload_libraries",
            "dynamic_library_path",
            "jit_provider",
            "external_pid_file",
        ] {
            assert!(set.contains(&name), "{name} is not overridden");
        }
        let dir = tempfile::tempdir().unwrap();
        let names = |v: &str| {
            std::fs::write(dir.path().join("PG_VERSION"), v).unwrap();
            recovery_settings(dir.path(), dir.path(), None)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert!(names("15\n").contains(&"archive_library"));
        assert!(!names("14\n").contains(&"archive_library"));
        assert!(names("17\n").contains(&"restore_command"));
    }

    #[test]
    fn server_times_parse() {
        let t = parse_pg_time("2026-11-23 10:00:01.234567+00").unwrap();
        assert_eq!(rfc3339(t), "2026-11-23T10:00:01.234567Z");
        let t = parse_pg_time("2026-11-23 12:00:01+02").unwrap();
        assert_eq!(
            t.unix_timestamp(),
            parse_pg_time("2026-11-23 10:00:01+00")
                .unwrap()
                .unix_timestamp()
        );
        assert!(parse_pg_time("yesterday").is_none());
    }

    /// The restore_command as the server runs it (`sh -c`, `%f` and `%p`
    /// substituted, from the data directory): a wanted file is waited for,
    /// any other is missing at once, a wanted one that never comes is missing
    /// once fetching is over, and with bkp gone it stops recovery (exit 255).
    #[test]
    fn the_restore_command_waits_for_wanted_files_only() {
        let d = tempfile::tempdir().unwrap();
        let (wal, data) = (d.path().join("wal"), d.path().join("data"));
        fs::create_dir_all(&wal).unwrap();
        fs::create_dir_all(data.join("pg_wal")).unwrap();
        fs::write(wal.join(WANTED), "A\nC\n").unwrap();
        fs::write(wal.join(FETCHING), b"").unwrap();
        let run = |name: &str, pid: u32| {
            let cmd = restore_command(&wal, pid)
                .replace("%f", name)
                .replace("%p", "pg_wal/RECOVERYXLOG");
            std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&data)
                .status()
                .unwrap()
        };
        let me = std::process::id();
        // Not wanted: missing at once (a plain failure, not above 125).
        let t = Instant::now();
        let st = run("B", me);
        assert!(!st.success() && st.code().is_some_and(|c| c <= 125), "{st}");
        assert!(t.elapsed() < Duration::from_secs(2));
        // Wanted, fetched meanwhile: copied once it is there.
        let (w, p) = (wal.clone(), wal.join("A"));
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fs::write(w.join(".A.tmp"), b"segment").unwrap();
            fs::rename(w.join(".A.tmp"), p).unwrap();
        });
        assert!(run("A", me).success());
        late.join().unwrap();
        assert_eq!(
            fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(),
            b"segment"
        );
        // bkp gone while a wanted file is missing: recovery must stop. (Were
        // the liveness check missing, the end of fetching below, ten seconds
        // on, would end the wait with a plain failure instead.)
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let (w, (end, ended)) = (wal.clone(), std::sync::mpsc::channel::<()>());
        let over = std::thread::spawn(move || {
            let _ = ended.recv_timeout(Duration::from_secs(10));
            let _ = fs::remove_file(w.join(FETCHING));
        });
        assert_eq!(run("C", dead).code(), Some(255));
        end.send(()).unwrap();
        // Fetching over: a wanted file still missing is missing.
        over.join().unwrap();
        let st = run("C", me);
        assert!(!st.success() && st.code().is_some_and(|c| c <= 125), "{st}");
    }

    #[test]
    fn fetching_stops_one_segment_past_the_time() {
        let at = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let mk = |name: &str, secs: i64| {
            let k = wal::key(
                7,
                name,
                &"ab".repeat(32),
                crate::stages::compress::Compression::None,
                false,
            );
            let mut s = wal::parse_key(7, &k).unwrap();
            s.modified = Some(at + Duration::from_secs(0) + time::Duration::seconds(secs));
            s
        };
        let all = vec![
            mk("000000010000000000000001", -100),
            mk("000000010000000000000002", -50),
            mk("000000010000000000000003", 10),
            mk("000000010000000000000004", 20),
            mk("00000002.history", 30),
            mk("000000020000000000000003", 15),
            mk("000000020000000000000004", 40),
        ];
        let got: Vec<String> = to_fetch(&all, 2, at).into_iter().map(|s| s.name).collect();
        // In the order the server asks: history files, then by position with
        // the newest timeline first.
        assert_eq!(
            got,
            vec![
                "00000002.history",
                "000000010000000000000002",
                "000000020000000000000003",
                "000000010000000000000003",
            ]
        );
    }
}

//! Point-in-time recovery of TigerBeetle: replay the log segments after a restored
//! snapshot (or from the very beginning into a fresh data file) up to a moment.
//!
//! A private replica is started on the restored data file (the configured
//! `tigerbeetle` binary, loopback, a free port, the configured replica flags so
//! that the file is opened as production opens it), its newest timestamp tells
//! where the snapshot ends, and the segments covering `(newest, at]` are verified,
//! decrypted and replayed with the `imported` flag and their original timestamps.
//! What replay cannot reproduce exactly (pending-transfer timeouts and expiry, the
//! `imported` bit) is documented in `tblog.rs`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::chain;
use crate::commands::Ctx;
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::manifest::tigerbeetle::{interval, is_log_of, LOGS};
use crate::manifest::{self, Kind};
use crate::store::Store;
use crate::{pipeline, tblog};

/// What a point-in-time replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    pub snapshot_until: u64,
    pub segments: usize,
    pub accounts: u64,
    pub transfers: u64,
    pub last_timestamp: u64,
    pub at: u64,
}

/// A replica bkp started; stopped (and its lock awaited) when dropped.
pub struct PrivateReplica {
    child: Child,
    file: std::path::PathBuf,
}

impl Drop for PrivateReplica {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = crate::units::deadline(Duration::from_secs(10));
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The replica's lock can outlive the process briefly (io_uring).
        let deadline = crate::units::deadline(Duration::from_secs(10));
        while let Ok(f) = std::fs::File::open(&self.file) {
            if f.try_lock().is_ok() || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a replica of the configured `tigerbeetle` binary on `data_file`
/// (formatting it first when `fresh`) on a free loopback port, with the configured
/// replica flags, and waits until it serves. `why` names the caller in errors.
pub fn start_private_replica(
    ctx: &Ctx,
    data_file: &Path,
    fresh: bool,
    why: &str,
) -> Result<(PrivateReplica, tblog::ClusterConfig)> {
    let plan = &ctx.plan;
    let tb = plan.tigerbeetle.as_ref();
    let binary = tb.and_then(|t| t.binary.clone()).ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: {why} starts a private replica: set tigerbeetle.binary",
                plan.source.display()
            ),
        )
    })?;
    let replica_args: Vec<String> = tb.map(|t| t.replica_args.clone()).unwrap_or_default();
    let cluster_id = tb
        .and_then(|t| t.cluster.as_ref())
        .map_or(0, |c| c.cluster_id);
    // The one replica log `workdir.rs` names (kept for the operator, never swept).
    let log_path = crate::workdir::WorkDir::new(&plan.work_dir).replica_log();
    let log = || -> Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?)
    };

    if fresh {
        let mut cmd = Command::new(&binary);
        cmd.args([
            "format",
            &format!("--cluster={cluster_id}"),
            "--replica=0",
            "--replica-count=1",
        ]);
        if replica_args.iter().any(|a| a == "--development") {
            cmd.arg("--development");
        }
        let status = cmd
            .arg(data_file)
            .stdout(log()?)
            .stderr(log()?)
            .status()
            .with_context(|| format!("failed to run {} format", binary.display()))?;
        if !status.success() {
            anyhow::bail!(
                "`tigerbeetle format` failed ({status}); see {}",
                log_path.display()
            );
        }
    }

    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let mut start = Command::new(&binary);
    die_with_this_process(&mut start);
    let child = start
        .arg("start")
        .arg(format!("--addresses={address}"))
        .args(&replica_args)
        .arg(data_file)
        .stdin(Stdio::null())
        .stdout(log()?)
        .stderr(log()?)
        .spawn()
        .with_context(|| {
            format!(
                "failed to start {} on {}",
                binary.display(),
                data_file.display()
            )
        })?;
    let mut replica = PrivateReplica {
        child,
        file: data_file.to_path_buf(),
    };
    let deadline = crate::units::deadline(Duration::from_secs(120));
    while TcpStream::connect(&address).is_err() {
        if let Some(status) = replica.child.try_wait().ok().flatten() {
            anyhow::bail!("the private replica exited ({status}) before it served; see {} (do tigerbeetle.replica_args match the production cluster's flags?)", log_path.display());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the private replica on {address} did not come up; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::failpoint::hit("private-replica");
    let cfg = tblog::ClusterConfig {
        cluster_id,
        addresses: address,
        timeout: Duration::from_secs(60),
    };
    Ok((replica, cfg))
}

/// Makes the command's process die with this one. A run killed with SIGKILL runs
/// no `Drop`, and a private replica left running would keep its port, its memory
/// and its data file (deleted from the swept scratch, but still open). The
/// signal comes when the spawning *thread* ends, so a replica is started and
/// kept by the same thread (every caller does).
fn die_with_this_process(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook runs between fork and exec, where only async-signal-safe
    // calls are allowed: prctl and getppid are, and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // This process died before the prctl: nobody is left to stop the replica.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Counts the accounts and transfers in `data_file` through a private replica
/// (which may write to the file: never call this on a production data file).
/// The stats' `until` is the newest timestamp.
pub fn count_rows(ctx: &Ctx, data_file: &Path, why: &str) -> Result<tblog::SegmentStats> {
    let (replica, cfg) = start_private_replica(ctx, data_file, false, why)?;
    let stats = tblog::capture(&cfg, 0, &mut std::io::sink())?;
    drop(replica);
    Ok(stats.segment)
}

/// Replays the log onto `data_file` (formatting it first when `fresh`) up to `at`.
pub fn replay_logs(
    ctx: &Ctx,
    store: &dyn Store,
    keyring: Option<&Keyring>,
    data_file: &Path,
    at: OffsetDateTime,
    fresh: bool,
) -> Result<Replayed> {
    let (replica, cfg) = start_private_replica(ctx, data_file, fresh, "point-in-time restore")?;
    let plan = &ctx.plan;
    let at_ns = u64::try_from(at.unix_timestamp_nanos()).context("--at is before 1970")?;
    let newest = tblog::newest_timestamp(&cfg)?;
    if newest > at_ns {
        return Err(coded(Code::NotFound, format!("the snapshot already holds rows newer than --at ({newest} > {at_ns}): choose an older snapshot")));
    }

    // The segments covering (newest, at], which must meet without a gap.
    // Only this cluster's chain (the cluster the private replica runs as).
    let (all, unreadable) = manifest::list(store, Some(Kind::Tigerbeetle))?;
    let all: Vec<_> = all
        .into_iter()
        .filter(|m| m.operation != LOGS || is_log_of(m, cfg.cluster_id))
        .collect();
    let (logs, reached) = chain::log_cover(&all, newest, at_ns).map_err(|h| {
        coded(
            Code::Integrity,
            format!("the log has a gap before segment {}: nothing covers ({}, {}]; the restore cannot reach {at} — restore to an earlier time or from a later snapshot", h.next, h.reached, h.after),
        )
    })?;
    if reached < at_ns {
        // A segment that could not be read may be the one that continues the
        // chain: never end early in silence.
        let bad: Vec<_> = unreadable.iter().collect();
        if !bad.is_empty() {
            return Err(manifest::unreadable_error(
                &format!("the log reaches only timestamp {reached}, short of --at {at}"),
                &bad,
            ));
        }
        let current_at = all
            .iter()
            .filter(|m| m.operation == LOGS && interval(m).is_some_and(|(_, u)| u >= reached))
            .map(|m| m.started_at)
            .max();
        if current_at.is_none_or(|t| t < at) {
            ctx.ui.warn(&format!("the log reaches only timestamp {reached} (the newest log run was before {at}); restoring up to there"));
        }
    }

    let mut out = Replayed {
        snapshot_until: newest,
        at: at_ns,
        ..Default::default()
    };
    let spool = crate::workdir::WorkDir::new(&plan.work_dir).scratch("spool")?;
    for m in &logs {
        let entry = &m.objects[0];
        pipeline::download(
            store,
            entry,
            m.compression,
            pipeline::keys_for(m, keyring)?,
            spool.path(),
            ctx.progress(),
            |r| {
                let reader = tblog::SegmentReader::new(r)?;
                let stats = tblog::replay(&cfg, std::iter::once(Ok(reader)), at_ns)?;
                out.accounts += stats.accounts;
                out.transfers += stats.transfers;
                out.last_timestamp = out.last_timestamp.max(stats.last_timestamp);
                Ok(())
            },
        )
        .with_context(|| format!("failed to replay log segment {} ({})", m.id, entry.key))?;
        out.segments += 1;
    }
    drop(replica);
    Ok(out)
}

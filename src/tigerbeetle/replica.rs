//! Private TigerBeetle replicas: a one-replica cluster that bkp starts on a data
//! file of its own (a restored file, a drill's copy, a snapshot's private copy) to
//! read or replay rows through the client, and stops again; or a private cluster of
//! several fresh replicas ([`start_cluster`]) that a point-in-time restore replays
//! the log into, to deliver one data file per replica.
//!
//! The replica runs the configured `tigerbeetle` binary on a free loopback port
//! with the configured replica flags, so that the file is opened as production
//! opens it (a `--development` cluster's file needs `--development`). Its output
//! goes to the work directory's replica log. A replica may write to its data file:
//! never start one on a production data file.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::client::ClientSpec;
use super::tblog::{self, SegmentStats};

/// How long a private replica may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on each request to a private replica: on loopback only a wedged replica
/// takes this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping replica (and its lock on the data file) may linger.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What starting a private replica needs.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// The `tigerbeetle` binary.
    pub binary: PathBuf,
    /// The cluster id the data file was formatted with (or is formatted with).
    pub cluster_id: u128,
    /// Flags for `tigerbeetle start`, as the production cluster runs them.
    pub replica_args: Vec<String>,
    /// Where the replica's output goes (appended).
    pub log: PathBuf,
    /// Environment variables the replica may see beyond the harmless ones.
    pub pass_env: Vec<String>,
}

/// A replica bkp started; stopped (and its lock awaited) when dropped.
pub struct PrivateReplica {
    child: Child,
    file: PathBuf,
    /// Where this replica's output starts in the shared replica log.
    log_from: u64,
}

impl PrivateReplica {
    /// Asks the replica to stop (SIGTERM); does not wait.
    fn terminate(&self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }
}

impl Drop for PrivateReplica {
    fn drop(&mut self) {
        self.terminate();
        let deadline = crate::units::deadline(STOP_GRACE);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The replica's lock can outlive the process briefly (io_uring).
        let deadline = crate::units::deadline(STOP_GRACE);
        while let Ok(f) = File::open(&self.file) {
            if f.try_lock().is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free loopback ports: each is held until all are picked, so the
/// system cannot hand out one twice; all are released on return, for the
/// replicas to bind.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find a free loopback port for a private replica")?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Starts a replica on `data_file` (formatting it first when `fresh`) and waits
/// until it serves; returns it with the spec to reach it.
pub fn start(
    spec: &ReplicaSpec,
    data_file: &Path,
    fresh: bool,
) -> Result<(PrivateReplica, ClientSpec)> {
    if fresh {
        format(spec, data_file, 0, 1)?;
    }
    // A file bkp did not format is reached with the cluster id it holds: a
    // client of another cluster is never answered, and would wait out every
    // request's timeout (a snapshot taken without [tigerbeetle] cluster_id).
    // Where the config names a cluster, a file of another is refused.
    let own;
    let spec = match cluster_of(data_file) {
        Some(cluster) if !fresh && cluster != spec.cluster_id && spec.cluster_id != 0 => {
            return Err(crate::exit::coded(
                crate::exit::Code::Config,
                format!(
                    "{} was formatted for TigerBeetle cluster {cluster}, and [tigerbeetle] cluster_id is {}: it is another cluster's data file",
                    data_file.display(),
                    spec.cluster_id
                ),
            ));
        }
        Some(cluster) if !fresh && cluster != spec.cluster_id => {
            own = ReplicaSpec {
                cluster_id: cluster,
                ..spec.clone()
            };
            &own
        }
        _ => spec,
    };
    let address = format!("127.0.0.1:{}", free_port()?);
    let mut replica = launch(spec, data_file, &address)?;
    wait_serving(spec, &mut replica, &address)?;
    crate::failpoint::hit("private-replica");
    Ok((replica, client_spec(spec, address)))
}

/// Where a data file's superblock (its first copy, at the file's start)
/// holds the cluster id: after the checksum and its padding (32 bytes), the
/// copy number, version and release (8) and the sequence (8). See
/// `SuperBlockHeader` in TigerBeetle's `src/vsr/superblock.zig`.
const SUPERBLOCK_CLUSTER: std::ops::Range<usize> = 48..64;

/// The cluster id `data_file` was formatted with, from its superblock;
/// `None` when it cannot be read, or the first copy does not look like one
/// (its copy number, bytes 32..34, is 0; its version, 34..36, is not).
pub fn cluster_of(data_file: &Path) -> Option<u128> {
    use std::io::Read;
    let mut head = [0u8; SUPERBLOCK_CLUSTER.end];
    std::fs::File::open(data_file)
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()?;
    let copy = u16::from_le_bytes([head[32], head[33]]);
    let version = u16::from_le_bytes([head[34], head[35]]);
    if copy != 0 || version == 0 {
        return None;
    }
    let bytes: [u8; 16] = head[SUPERBLOCK_CLUSTER].try_into().ok()?;
    Some(u128::from_le_bytes(bytes))
}

fn client_spec(spec: &ReplicaSpec, addresses: String) -> ClientSpec {
    ClientSpec {
        cluster_id: spec.cluster_id,
        addresses,
        timeout: REQUEST_TIMEOUT,
    }
}

/// A private cluster of several replicas on loopback; every replica is stopped
/// (and its lock awaited) when dropped.
pub struct PrivateCluster {
    replicas: Vec<PrivateReplica>,
}

impl Drop for PrivateCluster {
    /// Signals every replica first, so that they stop together; each replica's
    /// own drop then waits for its exit and its lock.
    fn drop(&mut self) {
        for r in &self.replicas {
            r.terminate();
        }
    }
}

/// Formats one fresh data file per path (replica `i` of `files.len()`, the
/// spec's cluster id), starts them together as a cluster on loopback and waits
/// until every replica serves; returns it with the spec to reach it.
pub fn start_cluster(
    spec: &ReplicaSpec,
    files: &[PathBuf],
) -> Result<(PrivateCluster, ClientSpec)> {
    let count = u8::try_from(files.len())
        .ok()
        .filter(|n| (1..=MAX_REPLICAS).contains(n))
        .with_context(|| {
            format!(
                "a TigerBeetle cluster has 1 to {MAX_REPLICAS} replicas, not {}",
                files.len()
            )
        })?;
    for (i, file) in (0u8..).zip(files) {
        format(spec, file, i, count)?;
    }
    start_cluster_on(spec, files)
}

/// Starts a private cluster on `files`, the data files of replicas 0 … N-1 of
/// one cluster (as [`start_cluster`] formats them, or a stored base restored),
/// each on a free loopback port, and waits until every replica serves.
pub fn start_cluster_on(
    spec: &ReplicaSpec,
    files: &[PathBuf],
) -> Result<(PrivateCluster, ClientSpec)> {
    // Every port is taken before any replica starts: each names all of them.
    let addresses: Vec<String> = free_ports(files.len())?
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let all = addresses.join(",");
    // A replica of several serves only once it sees the others: start them all,
    // then wait for each (on an error, those started are stopped as dropped).
    let mut cluster = PrivateCluster {
        replicas: Vec::with_capacity(files.len()),
    };
    for file in files {
        cluster.replicas.push(launch(spec, file, &all)?);
    }
    for (replica, own) in cluster.replicas.iter_mut().zip(&addresses) {
        wait_serving(spec, replica, own)?;
    }
    crate::failpoint::hit("private-replica");
    Ok((cluster, client_spec(spec, all)))
}

/// The largest replica count TigerBeetle formats (standbys aside).
pub const MAX_REPLICAS: u8 = 6;

/// `tigerbeetle format` of replica `replica` of `count` at `data_file`.
fn format(spec: &ReplicaSpec, data_file: &Path, replica: u8, count: u8) -> Result<()> {
    let binary = &spec.binary;
    let mut cmd = crate::child::command(binary, &spec.pass_env);
    cmd.args([
        "format",
        &format!("--cluster={}", spec.cluster_id),
        &format!("--replica={replica}"),
        &format!("--replica-count={count}"),
    ]);
    if spec.replica_args.iter().any(|a| a == "--development") {
        cmd.arg("--development");
    }
    let status = cmd
        .arg(data_file)
        .stdout(open_log(&spec.log)?)
        .stderr(open_log(&spec.log)?)
        .status()
        .with_context(|| format!("failed to run {} format", binary.display()))?;
    if !status.success() {
        anyhow::bail!(
            "`tigerbeetle format` failed ({status}); see {}",
            spec.log.display()
        );
    }
    Ok(())
}

fn open_log(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))
}

/// Starts `tigerbeetle start` on `data_file` as one of the replicas at
/// `addresses`; does not wait.
fn launch(spec: &ReplicaSpec, data_file: &Path, addresses: &str) -> Result<PrivateReplica> {
    let binary = &spec.binary;
    let log_from = std::fs::metadata(&spec.log).map_or(0, |m| m.len());
    let mut start = crate::child::command(binary, &spec.pass_env);
    die_with_this_process(&mut start);
    let child = start
        .arg("start")
        .arg(format!("--addresses={addresses}"))
        .args(&spec.replica_args)
        .arg(data_file)
        .stdin(Stdio::null())
        .stdout(open_log(&spec.log)?)
        .stderr(open_log(&spec.log)?)
        .spawn()
        .with_context(|| {
            format!(
                "failed to start {} on {}",
                binary.display(),
                data_file.display()
            )
        })?;
    Ok(PrivateReplica {
        child,
        file: data_file.to_path_buf(),
        log_from,
    })
}

/// Waits until `replica` accepts connections on `own`. A connection alone does
/// not say the replica answers: the port was free when bkp chose it, and a
/// local user who binds it first would be sent every row replayed and could
/// answer the counts that check the replay. What listens must be the replica
/// (or a process it started), else nothing is sent.
fn wait_serving(spec: &ReplicaSpec, replica: &mut PrivateReplica, own: &str) -> Result<()> {
    let log_path = &spec.log;
    let deadline = crate::units::deadline(START_TIMEOUT);
    let port = own
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("{own} names no port"))?;
    // (A listener shows in /proc before a connection to it succeeds.)
    while TcpStream::connect(own).is_err() {
        if let Some(status) = replica.child.try_wait().ok().flatten() {
            if let Some(replica_count) = replica_count_refused(log_path, replica.log_from) {
                return Err(NotAlone {
                    replica_count,
                    file: replica.file.clone(),
                }
                .into());
            }
            anyhow::bail!(
                "the private replica on {} exited ({status}) before it served; see {} (do \
                 tigerbeetle.replica_args match the production cluster's flags?)",
                replica.file.display(),
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the private replica on {own} did not come up; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match listener(replica.child.id(), port) {
        Listener::Ours => Ok(()),
        Listener::Unseen => Err(crate::exit::coded(
            crate::exit::Code::Unsupported,
            format!(
                "bkp cannot see which process listens on the port of the private replica on \
                 {} ({own}): /proc/net/tcp shows no listener there, so it cannot check that \
                 what answers is the replica it started, and sends it nothing",
                replica.file.display()
            ),
        )),
        Listener::Other => Err(crate::exit::coded(
            crate::exit::Code::Locked,
            format!(
                "another process than the private replica listens on its port ({own}, for {}): \
                 nothing was sent to it. Run again; if it happens again, a user of this host is \
                 taking the port (run restores and drills on a host without untrusted users), \
                 or tigerbeetle.binary is a wrapper whose server is not its own process or \
                 child (a container runtime, a daemonizing script): name the tigerbeetle \
                 binary itself, or make the wrapper exec it",
                replica.file.display()
            ),
        )),
    }
}

/// Who listens on a loopback port, as process `pid` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `pid`, or a process it started (a wrapper script's server).
    Ours,
    /// Another process, or one this process cannot look into (another
    /// user's).
    Other,
    /// No listener shows in `/proc/net/tcp{,6}`.
    Unseen,
}

/// Who listens on `port` ([`Listener`]): from `/proc/net/tcp{,6}` and the
/// descriptors of `pid`, then (only when `pid` holds none of them) of the
/// processes it started. Test harnesses ask it of the servers they start.
pub fn listener(pid: u32, port: u16) -> Listener {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Listener::Unseen;
    }
    let holds = |p: u32| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                let link = std::fs::read_link(fd.path()).unwrap_or_default();
                let link = link.to_string_lossy();
                link.strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                    .is_some_and(|i| inodes.iter().any(|n| n == i))
            })
    };
    if holds(pid) || family(pid).into_iter().skip(1).any(holds) {
        Listener::Ours
    } else {
        Listener::Other
    }
}

/// The inodes of the sockets listening on `port`: `/proc/net/tcp{,6}` lines
/// are `sl local rem st … inode`, a listener's state `0A`.
fn listening_inodes(port: u16) -> Vec<String> {
    let suffix = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1].ends_with(&suffix) && f[3] == "0A" {
                inodes.push(f[9].to_string());
            }
        }
    }
    inodes
}

/// `pid` and the processes it started, and theirs (a wrapper script's
/// `tigerbeetle`), from `/proc/*/stat`.
fn family(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(pp) = ppid {
            parent_of.push((p, pp));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// A data file of one replica of a cluster of several: TigerBeetle runs it only
/// with the other replicas (the replica count is in its superblock), so a private
/// replica cannot open it. Point-in-time recovery takes the log alone.
#[derive(Debug)]
pub struct NotAlone {
    pub replica_count: u8,
    pub file: PathBuf,
}

impl std::fmt::Display for NotAlone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is the data file of one replica of a {}-replica cluster: TigerBeetle \
             runs it only together with the other replicas, so no private replica can \
             open it",
            self.file.display(),
            self.replica_count
        )
    }
}

impl std::error::Error for NotAlone {}

/// The replica count TigerBeetle names when it refuses to open a replica of a
/// larger cluster alone (`open: no address for replica (replica_count=3
/// node_count=1)`), from what the replica wrote to its log after `from`.
fn replica_count_refused(log: &Path, from: u64) -> Option<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    f.take(64 * 1024).read_to_end(&mut tail).ok()?;
    parse_replica_count_refused(&String::from_utf8_lossy(&tail))
}

fn parse_replica_count_refused(text: &str) -> Option<u8> {
    let at = text.find("no address for replica (replica_count=")?;
    let rest = &text[at + "no address for replica (replica_count=".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&n: &u8| n > 1)
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
/// The stats' `until` is where the file's history ends ([`tblog::newest_before_on`]):
/// its newest row, or a later expiry of the source. One session for both.
pub fn count_rows(spec: &ReplicaSpec, data_file: &Path) -> Result<SegmentStats> {
    let started = started_ns();
    let (replica, cfg) = start(spec, data_file, false)?;
    let c = tblog::reader(&cfg)?;
    let mut stats = tblog::capture_rows_on(&c, &mut std::io::sink())?.segment;
    stats.until = stats.until.max(tblog::newest_before_on(&c, started)?);
    c.close();
    drop(replica);
    Ok(stats)
}

/// Lets a private replica open `data_file`, a copy of a replica's file taken
/// mid-write, so that it repairs what the stop tore (a superblock copy, a WAL
/// slot, a client reply) as the replica itself would on its next start; waits
/// until it answers a request and has been idle a moment (so that nothing is in
/// flight when it stops), then stops it. Never on a production data file.
pub fn settle(spec: &ReplicaSpec, data_file: &Path) -> Result<()> {
    let (replica, cfg) = start(spec, data_file, false)?;
    let c = tblog::reader(&cfg)?;
    tblog::newest_before_on(&c, started_ns())?;
    c.close();
    std::thread::sleep(SETTLE_IDLE);
    drop(replica);
    Ok(())
}

/// How long a settling replica is left idle after its last answer before it is
/// stopped (its client reply is written after the answer is sent).
const SETTLE_IDLE: Duration = Duration::from_secs(1);

/// Now, in nanoseconds since 1970 (the scale of TigerBeetle's timestamps).
pub fn started_ns() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port is the replica's only when the replica (or a process it
    /// started) listens on it: not when another process does.
    #[test]
    fn a_port_is_the_replicas_only_when_it_or_its_child_listens() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener(std::process::id(), port), Listener::Ours);
        // A process that listens on nothing, and its own child.
        let mut other = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        assert_eq!(listener(other.id(), port), Listener::Other);
        // Its child (the `sleep`) is of its family.
        let grown = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            family(other.id()).len() >= 2
        });
        assert!(grown, "{:?}", family(other.id()));
        // This test's process started `other`: its family holds it.
        assert!(family(std::process::id()).contains(&other.id()));
        let _ = other.kill();
        let _ = other.wait();
        drop(l);
        assert_eq!(listener(std::process::id(), port), Listener::Unseen);
    }

    #[test]
    fn a_refused_replica_of_a_larger_cluster_is_recognised() {
        let log = "info(main): 170: cluster=0\n\
                   error(replica): 170r: open: no address for replica (replica_count=3 node_count=1)\n\
                   error(vsr): all --addresses must be provided\n";
        assert_eq!(parse_replica_count_refused(log), Some(3));
        assert_eq!(
            parse_replica_count_refused("no address for replica (replica_count=6 node_count=2)"),
            Some(6)
        );
        assert_eq!(parse_replica_count_refused("error: data file locked"), None);
        assert_eq!(
            parse_replica_count_refused("no address for replica (replica_count=x"),
            None
        );
    }
}

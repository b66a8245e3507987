//! Shared harness for the integration tests: real servers on loopback, no mocks.
//!
//! Starts TigerBeetle replicas (development mode) and SeaweedFS servers with their S3 API,
//! finds the tools that `scripts/bootstrap` installs, hands out free ports, and runs the
//! real `bkp` binary with a hermetic AWS environment and a timeout.
//!
//! Each server runs under a small `/bin/sh` supervisor whose stdin is a pipe held by the
//! test process. When the test process ends in any way (exit, panic, SIGKILL) the pipe
//! closes, and the supervisor stops the server (SIGTERM, SIGKILL after a grace period) and
//! removes its scratch directory. That is what cleans up the process-wide servers behind
//! [`shared_s3`] and [`shared_ledger`]: statics are never dropped.
#![allow(dead_code)]

pub mod cluster;
pub mod postgres;

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long one `bkp` run may take before the test fails instead of hanging.
pub const BKP_TIMEOUT: Duration = Duration::from_secs(300);
const RCLONE_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const TB_STOP_GRACE: Duration = Duration::from_secs(10);
const S3_STOP_GRACE: Duration = Duration::from_secs(3);

// ---- Tools ------------------------------------------------------------------------------

/// Where `scripts/bootstrap` put the tools: `$BKP_TOOLS` if set, else the first of
/// `$BKP_CACHE/tools`, `$XDG_CACHE_HOME/bkp/tools`, `$HOME/.cache/bkp/tools` and
/// `<crate>/.tools` that has a `bin` directory.
pub fn tools_dir() -> PathBuf {
    let var = |k: &str| Some(PathBuf::from(std::env::var_os(k)?)).filter(|p| p != "");
    if let Some(dir) = var("BKP_TOOLS") {
        return dir;
    }
    let candidates: Vec<PathBuf> = [
        var("BKP_CACHE").map(|d| d.join("tools")),
        var("XDG_CACHE_HOME").map(|d| d.join("bkp/tools")),
        var("HOME").map(|d| d.join(".cache/bkp/tools")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let found = candidates.iter().find(|d| d.join("bin").is_dir());
    found.unwrap_or(&candidates[0]).clone()
}

/// Path of an installed tool (`tigerbeetle`, `weed`, `rclone`); panics if it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join("bin").join(name);
    assert!(
        path.is_file(),
        "test tool `{name}` is missing: no executable at {}. Run `scripts/bootstrap --tools` \
         (or `scripts/bootstrap`) to install it, or point BKP_TOOLS at a directory with bin/{name}.",
        path.display()
    );
    path
}

/// The `bkp` binary the tests drive: the one cargo built for them, or the one
/// `BKP_TEST_BIN` names (`scripts/package` runs the suite against the release
/// binary it packages).
pub fn bkp_bin() -> PathBuf {
    match std::env::var_os("BKP_TEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_bkp")),
    }
}

// ---- Names, ports, scratch directories --------------------------------------------------

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write(format!("{:?}", SystemTime::now()).as_bytes());
    h.finish()
}

/// A name unique in this process and very likely across processes, valid as an S3 bucket
/// name (lowercase letters, digits, `-`; at most 63 characters): `prefix-PID-N-RAND`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let clean = prefix.to_ascii_lowercase();
    let clean = clean.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let mut clean = clean.trim_matches('-');
    clean = &clean[..clean.len().min(32)];
    let (pid, n) = (std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let rand = random_u64() & 0xffff;
    let clean = if clean.is_empty() { "t" } else { clean };
    format!("{clean}-{pid:x}-{n}-{rand:04x}")
}

/// A fresh directory under `$TMPDIR`; its owner removes it.
fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bkp-test-{}", unique_name(what)));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A port P (and P + `offset`) bindable on 127.0.0.1 now and never handed out before by
/// this process, scanning from a random start in 20000..=40000. Stays below the kernel's
/// ephemeral range when it can, so that no outgoing connection takes a server's port
/// between a stop and a restart.
fn allocate_port(offset: u32) -> u16 {
    static TAKEN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    let range = fs::read_to_string(PORT_RANGE).unwrap_or_default();
    let first: Option<u32> = range.split_whitespace().find_map(|s| s.parse().ok());
    let below = first.unwrap_or(32768).saturating_sub(1 + offset);
    let hi = below.min(40000);
    let (lo, hi) = (20000, if hi < 21000 { 40000 } else { hi });
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let span = hi - lo + 1;
    let start = (random_u64() % u64::from(span)) as u32;
    for i in 0..span {
        let p = lo + (start + i) % span;
        let free = |q: &u32| !taken.contains(q) && bindable(*q);
        if [p, p + offset].iter().all(free) {
            taken.extend([p, p + offset]);
            return p as u16;
        }
    }
    panic!("no free port on 127.0.0.1 in {lo}..={hi}")
}

/// Whether process `pid` (or one it started) listens on `port`. A connection
/// alone does not say so: when two test processes pick the same free port, the
/// one whose server lost the race would otherwise take the other's server for
/// its own. bkp asks the same of its private replicas.
pub fn listens_on(pid: u32, port: u16) -> bool {
    bkp::tigerbeetle::replica::listener(pid, port) == bkp::tigerbeetle::replica::Listener::Ours
}

const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

fn bindable(port: u32) -> bool {
    TcpListener::bind(("127.0.0.1", port as u16)).is_ok()
}

/// A port free on 127.0.0.1, never handed out twice in this process.
pub fn free_port() -> u16 {
    allocate_port(0)
}

/// A port P with P and P + 10000 both free (SeaweedFS serves gRPC on port + 10000).
pub fn free_port_pair() -> u16 {
    allocate_port(10000)
}

/// Runs `start` again (it takes new ports) when another process took a port first.
fn retry_port_clash<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    for _ in 0..3 {
        match start() {
            Err(e) if e.contains("already in use") || e.contains("AddressInUse") => {}
            result => return result.unwrap_or_else(|e| panic!("{what} {e}")),
        }
    }
    panic!("{what}: its ports kept being taken by other processes")
}

// ---- Supervised servers -----------------------------------------------------------------

/// Starts the server in the background (output to the log), prints its pid, then waits on
/// stdin: a line `stop` sends SIGTERM, `kill` SIGKILL; EOF (the test process is gone) sends
/// SIGTERM and afterwards removes the cleanup paths. SIGKILL follows after the grace
/// period. The server stays our child until `wait`, so its pid cannot be reused meanwhile.
const SUPERVISOR: &str = r#"
log=$1 grace=$2; shift 2
cleanup=$BKP_TEST_CLEANUP; unset BKP_TEST_CLEANUP
"$@" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid"
read -r cmd || cmd=eof
if [ "$cmd" = kill ]; then kill -KILL "$pid"; else kill -TERM "$pid"; fi 2>/dev/null
i=0
while [ "$i" -lt "$grace" ]; do
  read -r st 2>/dev/null </proc/"$pid"/stat || break
  case $st in *") Z "*) break ;; esac
  sleep 0.1; i=$((i + 1))
done
kill -KILL "$pid" 2>/dev/null
wait "$pid"
[ "$cmd" = eof ] && printf '%s\n' "$cleanup" | while IFS= read -r p; do rm -rf -- "$p"; done
"#;

const CLEANUP_VAR: &str = "BKP_TEST_CLEANUP";

/// How to start a server: program, arguments, extra environment, and what the supervisor
/// removes if the test process dies.
struct Spec {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
    grace: Duration,
    cleanup: Vec<PathBuf>,
}

struct Supervised {
    supervisor: Child,
    control: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    /// Runs the server with `dir` as working directory, logging to `dir/server.log`.
    fn spawn(spec: Spec, dir: &Path) -> Supervised {
        let log = dir.join("server.log");
        let cleanup = spec.cleanup.iter().map(|p| format!("{}\n", p.display()));
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", SUPERVISOR, "supervisor"]).arg(&log);
        cmd.arg((spec.grace.as_millis() / 100).to_string());
        cmd.arg(&spec.program).args(&spec.args).current_dir(dir);
        cmd.envs(spec.envs)
            .env(CLEANUP_VAR, cleanup.collect::<String>());
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        // Its own process group: Ctrl-C reaches only the test process; the pipe does the rest.
        cmd.stderr(Stdio::null()).process_group(0);
        let what = spec.program.display();
        let spawned = cmd.spawn();
        let mut supervisor = spawned.unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut line = String::new();
        let _ = BufReader::new(supervisor.stdout.take().unwrap()).read_line(&mut line);
        let pid = line.trim().parse();
        let pid = pid.unwrap_or_else(|_| panic!("no pid for {what}"));
        let control = supervisor.stdin.take();
        Supervised {
            supervisor,
            control,
            pid,
            log,
        }
    }

    /// Whether the server is still running (not exited, not a zombie).
    fn running(&self) -> bool {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let after_name = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        !matches!(after_name.chars().next(), None | Some('Z' | 'X'))
    }

    /// Whether this server itself listens on `port` (see [`listens_on`]).
    fn listens_on(&self, port: u16) -> bool {
        listens_on(self.pid, port)
    }

    /// Polls `ready`; Err with the log's tail if the server dies or `timeout` passes.
    fn wait_ready(&self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !ready() {
            let problem = if !self.running() {
                "exited during start-up".to_string()
            } else if Instant::now() > deadline {
                format!("not ready after {timeout:?}")
            } else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let log = lossy(&fs::read(&self.log).unwrap_or_default());
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            return Err(format!("{problem}; end of {}:\n{tail}", self.log.display()));
        }
        Ok(())
    }

    /// Sends `stop` or `kill` and waits until the server has exited. Idempotent.
    fn halt(&mut self, how: &str) {
        if let Some(mut control) = self.control.take() {
            let _ = writeln!(control, "{how}");
            drop(control);
            let _ = self.supervisor.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.halt("kill");
    }
}

/// Removes `path` in a detached process: deleting a 1 GiB data file can take seconds.
fn remove_later(path: &Path) {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", r#"rm -rf -- "$1" &"#, "rm"]).arg(path);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(Stdio::null()).process_group(0);
    if cmd.status().is_err() {
        let _ = fs::remove_dir_all(path);
    }
}

// ---- TigerBeetle ------------------------------------------------------------------------

/// A single-replica development-mode TigerBeetle cluster (cluster 0) on 127.0.0.1.
pub struct TigerBeetle {
    pub port: u16,
    pub data_file: PathBuf,
    /// Scratch directory with `server.log` (and the data file, for [`TigerBeetle::start`]).
    pub dir: PathBuf,
    server: Option<Supervised>,
}

impl TigerBeetle {
    /// Formats a fresh data file in a new scratch directory and starts a replica on it.
    pub fn start() -> TigerBeetle {
        Self::start_cluster(0)
    }

    /// Like [`TigerBeetle::start`], for cluster id `cluster`.
    pub fn start_cluster(cluster: u128) -> TigerBeetle {
        let mut format = Command::new(tool("tigerbeetle"));
        let dir = scratch_dir("tigerbeetle");
        let data_file = dir.join(format!("{cluster}_0.tigerbeetle"));
        format.arg("format").arg(format!("--cluster={cluster}"));
        format.args(["--replica=0", "--replica-count=1"]);
        format.arg("--development").arg(&data_file);
        let out = format.output().unwrap();
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            panic!("tigerbeetle format failed: {}", lossy(&out.stderr));
        }
        Self::launch(dir, data_file)
    }

    /// Starts a replica on an existing data file (for example a restored one).
    pub fn start_on(data_file: &Path) -> TigerBeetle {
        tool("tigerbeetle");
        Self::launch(scratch_dir("tigerbeetle"), data_file.to_path_buf())
    }

    /// Starts a replica on `data_file` at `port`, once: Err (with the log's tail) if it
    /// does not come up there, for example because another process has the port.
    pub fn try_start_at(data_file: &Path, port: u16) -> Result<TigerBeetle, String> {
        let mut tb = TigerBeetle {
            port,
            data_file: data_file.to_path_buf(),
            dir: scratch_dir("tigerbeetle"),
            server: None,
        };
        tb.run().map(|()| tb)
    }

    fn launch(dir: PathBuf, data_file: PathBuf) -> TigerBeetle {
        let what = format!("TigerBeetle on {}", data_file.display());
        let mut tb = TigerBeetle {
            port: 0,
            data_file,
            dir,
            server: None,
        };
        retry_port_clash(&what, || {
            tb.port = free_port();
            tb.run()
        });
        tb
    }

    /// Starts the server on `port` and `data_file` and waits until it accepts TCP.
    fn run(&mut self) -> Result<(), String> {
        let spec = Spec {
            program: tool("tigerbeetle"),
            args: vec![
                "start".into(),
                format!("--addresses={}", self.address()),
                "--development".into(),
                self.data_file.display().to_string(),
            ],
            envs: vec![],
            grace: TB_STOP_GRACE,
            cleanup: vec![self.dir.clone()],
        };
        let server = Supervised::spawn(spec, &self.dir);
        let addr = ([127, 0, 0, 1], self.port).into();
        let connects = || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                && server.listens_on(self.port)
        };
        let ready = server.wait_ready(READY_TIMEOUT, connects);
        self.server = Some(server);
        if ready.is_err() {
            self.kill();
        }
        ready.map_err(|e| format!("at {}: {e}", self.address()))
    }

    /// `127.0.0.1:PORT`, for `--addresses` and for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The replica's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid)
    }

    /// Graceful stop (SIGTERM, SIGKILL after 10 s); returns once the data file's flock is
    /// free, so the file can be copied or reopened at once.
    pub fn stop(&mut self) {
        self.halt("stop");
    }

    /// Crash (SIGKILL); returns once the data file's flock is free.
    pub fn kill(&mut self) {
        self.halt("kill");
    }

    fn halt(&mut self, how: &str) {
        if let Some(mut server) = self.server.take() {
            server.halt(how);
            let unlocked = wait_unlocked(&self.data_file, Duration::from_secs(10));
            if let (Err(e), false) = (unlocked, thread::panicking()) {
                panic!("{e}");
            }
        }
    }

    /// Stops (if running) and starts again on the same data file and port.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.run() {
            panic!("TigerBeetle restart on {} {e}", self.data_file.display());
        }
    }
}

impl Drop for TigerBeetle {
    fn drop(&mut self) {
        self.kill();
        remove_later(&self.dir);
    }
}

/// Waits until nobody holds a flock on `path`: a running replica holds `LOCK_EX`, and
/// io_uring can keep its file open a moment after the process has gone.
pub fn wait_unlocked(path: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => return Ok(()), // released when `file` closes
            Err(e) if Instant::now() > deadline => {
                let path = path.display();
                return Err(format!("{path} still locked after {timeout:?}: {e}"));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One replica for the whole test process, started by the first caller. Tests sharing it
/// use their own ids and ledgers, and never stop it.
pub fn shared_ledger() -> &'static TigerBeetle {
    static LEDGER: OnceLock<TigerBeetle> = OnceLock::new();
    LEDGER.get_or_init(TigerBeetle::start)
}

// ---- SeaweedFS S3 -----------------------------------------------------------------------

/// A SeaweedFS server (master, volume, filer and S3 gateway in one process) on 127.0.0.1
/// with one identity allowed everything and one that may only read and list
/// ([`S3Server::read_only_env`]). Path-style addressing only.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// An identity allowed `Read` and `List` only: a PUT is AccessDenied.
    pub read_only_key: (String, String),
    pub region: String,
    pub dir: PathBuf,
    /// Unix sockets SeaweedFS creates in /tmp for its ports: a stale one is
    /// removed before a server starts on its port, never after one stops (by
    /// then another test process may run a server on the freed port, whose
    /// socket it would remove: that server's filer then never became ready).
    sockets: Vec<PathBuf>,
    server: Option<Supervised>,
}

impl S3Server {
    /// Starts a server in a new scratch directory; returns once a bucket can be created
    /// and written to.
    pub fn start() -> S3Server {
        retry_port_clash("SeaweedFS", Self::try_start)
    }

    fn try_start() -> Result<S3Server, String> {
        let (weed, _) = (tool("weed"), tool("rclone"));
        let dir = scratch_dir("s3");
        let access_key = format!("AK{:016X}", random_u64());
        let secret_key = format!("{:016x}{:016x}", random_u64(), random_u64());
        let actions = r#"["Admin","Read","Write","List","Tagging"]"#;
        let credentials = format!(r#"[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}]"#);
        let identity =
            format!(r#"{{"name":"bkp","credentials":{credentials},"actions":{actions}}}"#);
        let read_only_key = (
            format!("RO{:016X}", random_u64()),
            format!("{:016x}{:016x}", random_u64(), random_u64()),
        );
        let reader = format!(
            r#"{{"name":"reader","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Read","List"]}}"#,
            read_only_key.0, read_only_key.1
        );
        let config = dir.join("identities.json");
        fs::write(
            &config,
            format!(r#"{{"identities":[{identity},{reader}]}}"#),
        )
        .unwrap();
        let ports = [(); 4].map(|()| free_port_pair());
        let [master, volume, filer, s3] = ports;
        let mut args = vec![
            "server".to_string(),
            format!("-dir={}", dir.display()),
            format!("-master.port={master}"),
            format!("-volume.port={volume}"),
            format!("-filer.port={filer}"),
            format!("-s3.port={s3}"),
            format!("-s3.config={}", config.display()),
        ];
        // Many small volumes (and one, not seven, more per bucket: WEED_..._COPY_1 below),
        // no fixed default ports that parallel servers would fight over, no telemetry.
        let fixed = "-ip=127.0.0.1 -ip.bind=127.0.0.1 -filer -s3 -master.volumeSizeLimitMB=256 \
                     -volume.max=200 -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false";
        args.extend(fixed.split_whitespace().map(String::from));
        let sock = |name: String| PathBuf::from(format!("/tmp/seaweedfs-{name}.sock"));
        let mut sockets = vec![sock(format!("filer-{filer}")), sock(format!("s3-{s3}"))];
        for (kind, port) in ["master", "volume", "filer", "s3"].iter().zip(ports) {
            sockets.push(sock(format!("{kind}-grpc-{}", port + 10000)));
        }
        let spec = Spec {
            program: weed,
            args,
            envs: vec![
                ("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1".into()),
                ("HOME", dir.display().to_string()), // no ~/.seaweedfs config
            ],
            grace: S3_STOP_GRACE,
            cleanup: vec![dir.clone()],
        };
        // Left by a server that had these ports before (its ports are free now).
        for socket in &sockets {
            let _ = fs::remove_file(socket);
        }
        let server = Some(Supervised::spawn(spec, &dir));
        let s3_port = s3;
        let endpoint = format!("http://127.0.0.1:{s3}");
        let region = "us-east-1".to_string();
        let s3 = S3Server {
            endpoint,
            access_key,
            secret_key,
            read_only_key,
            region,
            dir,
            sockets,
            server,
        };
        let (probe, mut last) = (unique_name("ready"), String::new());
        let usable = || {
            // Every port its own: an S3 gateway that reached another server's
            // filer would answer until this server gave up on its ports.
            let ours = s3.server.as_ref().is_some_and(|s| {
                [master, volume, filer, s3_port]
                    .iter()
                    .all(|p| s.listens_on(*p))
            });
            ours && http_answers(&s3.endpoint) && {
                let made = s3.rclone(&["mkdir", &format!("s3:{probe}")]);
                let key = format!("s3:{probe}/probe");
                let put = s3.rclone_stdin(&["rcat", "--low-level-retries=1", &key], b"ok");
                last = lossy(&[made.stderr, put.stderr].concat());
                put.status.success()
            }
        };
        let supervised = s3.server.as_ref().unwrap();
        let ready = supervised.wait_ready(READY_TIMEOUT, usable);
        ready.map_err(|e| format!("on {}: {e}\nlast probe error: {last}", s3.endpoint))?;
        // The probe bucket stays: every test makes buckets of its own, and a purge
        // (one more request per object, and a versioning probe SeaweedFS answers
        // with a web page) is only one more chance to stall a loaded machine.
        Ok(s3)
    }

    /// Creates a bucket, retrying for up to 30 s ("No writable volumes" after a start).
    pub fn create_bucket(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.rclone(&["mkdir", &format!("s3:{name}")]);
            if out.status.success() {
                return;
            }
            let (err, url) = (lossy(&out.stderr), &self.endpoint);
            if Instant::now() > deadline {
                panic!("cannot create bucket {name} on {url}:\n{err}");
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates a bucket with a unique name starting with `prefix`, and returns the name.
    pub fn new_bucket(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.create_bucket(&name);
        name
    }

    /// rclone with this server as remote `s3` (paths `s3:bucket/key`); no user config and
    /// no inherited `RCLONE_*` variable is used.
    pub fn rclone_command(&self) -> Command {
        let mut cmd = Command::new(tool("rclone"));
        remove_env_with_prefix(&mut cmd, "RCLONE_");
        cmd.env("RCLONE_CONFIG", "/dev/null");
        for (key, value) in [
            ("TYPE", "s3"),
            ("PROVIDER", "SeaweedFS"),
            ("ACCESS_KEY_ID", &self.access_key),
            ("SECRET_ACCESS_KEY", &self.secret_key),
            ("ENDPOINT", &self.endpoint),
            ("REGION", &self.region),
            ("FORCE_PATH_STYLE", "true"),
        ] {
            cmd.env(format!("RCLONE_CONFIG_S3_{key}"), value);
        }
        cmd
    }

    /// Runs rclone, e.g. `s3.rclone(&["lsjson", "-R", "s3:bucket/prefix"])`.
    pub fn rclone(&self, args: &[&str]) -> Output {
        run(self.rclone_command().args(args), None, RCLONE_TIMEOUT)
    }

    /// Runs rclone with `input` on stdin, e.g. `s3.rclone_stdin(&["rcat", "s3:b/k"], b"..")`.
    pub fn rclone_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = self.rclone_command();
        run(cmd.args(args), Some(input), RCLONE_TIMEOUT)
    }

    /// The environment a child `bkp` needs for static credentials; the endpoint and
    /// path-style addressing belong in bkp's config. The AWS config and credential files
    /// are /dev/null so that no developer profile leaks in, and [`bkp_command`] drops every
    /// inherited `AWS_*` variable (such as `AWS_PROFILE`).
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs = [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", &self.region),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ];
        pairs.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    }

    /// [`S3Server::env`] with the read-only identity's credentials.
    pub fn read_only_env(&self) -> Vec<(String, String)> {
        let mut env = self.env();
        for (k, v) in env.iter_mut() {
            match k.as_str() {
                "AWS_ACCESS_KEY_ID" => v.clone_from(&self.read_only_key.0),
                "AWS_SECRET_ACCESS_KEY" => v.clone_from(&self.read_only_key.1),
                _ => {}
            }
        }
        env
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid)
    }

    /// Stops the server: SIGTERM, then SIGKILL after 3 s (SeaweedFS alone takes 15-30 s).
    pub fn stop(&mut self) {
        self.halt("stop");
    }

    fn halt(&mut self, how: &str) {
        if let Some(mut server) = self.server.take() {
            server.halt(how);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.halt("kill");
        remove_later(&self.dir);
    }
}

/// Whether something at `endpoint` answers HTTP.
fn http_answers(endpoint: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(endpoint.trim_start_matches("http://")) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    let sent = stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    sent.is_ok() && stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// One SeaweedFS for the whole test process, started by the first caller. Tests sharing it
/// use their own buckets ([`unique_name`], [`S3Server::new_bucket`]) or prefixes.
pub fn shared_s3() -> &'static S3Server {
    static S3: OnceLock<S3Server> = OnceLock::new();
    S3.get_or_init(S3Server::start)
}

// ---- Running bkp ------------------------------------------------------------------------

fn remove_env_with_prefix(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(&key);
        }
    }
}

/// A `bkp` command without any inherited `AWS_*` variable, with `envs` set.
pub fn bkp_command(envs: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bkp_bin());
    remove_env_with_prefix(&mut cmd, "AWS_");
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs `bkp args` with an empty stdin; fails the test after [`BKP_TIMEOUT`].
pub fn run_bkp(args: &[&str], envs: &[(String, String)]) -> Output {
    run(bkp_command(envs).args(args), None, BKP_TIMEOUT)
}

/// Runs `cmd` with `input` (or nothing) on stdin and captures its output; kills it and
/// fails the test, showing what it printed, if it takes longer than `timeout`.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let piped = input.is_some();
    let stdin = if piped { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned = cmd.spawn();
    let mut child = spawned.unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), input) {
        let bytes = bytes.to_vec();
        thread::spawn(move || pipe.write_all(&bytes));
    }
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    if let Ok(out) = rx.recv_timeout(timeout) {
        return out.unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    }
    // Not reaped yet, so the pid is still this child's.
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    let shown = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(out)) => show(&out),
        _ => String::new(),
    };
    panic!("{cmd:?} still running after {timeout:?}, killed\n{shown}");
}

pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    let (stdout, stderr) = (lossy(&out.stdout), lossy(&out.stderr));
    format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
}

/// The state letter of process `pid` in `/proc/{pid}/stat` (`T`: stopped, `Z`:
/// ended and not reaped yet), if it is there.
fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Whether process `pid` is stopped (SIGSTOP: a `BKP_PAUSEPOINT` was reached).
pub fn stopped(pid: u32) -> bool {
    state(pid) == Some('T')
}

/// Waits (at most a minute) until process `pid`, a child of the test, stops
/// itself at a `BKP_PAUSEPOINT`; `what` says where, for the failure, which
/// comes at once if the process ends instead.
#[track_caller]
pub fn wait_stopped(pid: u32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stopped(pid) {
        assert!(
            !matches!(state(pid), Some('Z') | None),
            "{what}: the process ended without pausing"
        );
        assert!(std::time::Instant::now() < deadline, "{what}: never paused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lets a process stopped at a `BKP_PAUSEPOINT` go on.
pub fn resume(pid: u32) {
    // SAFETY: kill(2) takes plain integers; the pid is a child the test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGCONT);
    }
}

/// Runs `bkp --config CONFIG ARGS` until it stops itself at pause point
/// `point` (`BKP_PAUSEPOINT`, e.g. `restore-verified:1`), runs `meanwhile`,
/// lets it go on, and returns its output; `what` says where it stops, for a
/// failure.
#[allow(dead_code)]
pub fn run_paused(
    config: &Path,
    args: &[&str],
    point: &str,
    what: &str,
    meanwhile: impl FnOnce(),
) -> Output {
    let mut cmd = bkp_command(&[("BKP_PAUSEPOINT".into(), point.into())]);
    let child = cmd
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_stopped(pid, what);
    meanwhile();
    resume(pid);
    child.wait_with_output().unwrap()
}

/// Fails the test, showing stdout and stderr, unless the process exited with `code`.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    if out.status.code() != Some(code) {
        let status = out.status;
        panic!("expected exit code {code}, got {status}\n{}", show(out));
    }
}

/// A freshly formatted development data file `0_0.tigerbeetle` in `dir`, with no
/// replica running on it.
pub fn formatted_data_file(dir: &Path) -> PathBuf {
    let f = dir.join("0_0.tigerbeetle");
    let out = Command::new(tool("tigerbeetle"))
        .args([
            "format",
            "--cluster=0",
            "--replica=0",
            "--replica-count=1",
            "--development",
        ])
        .arg(&f)
        .output()
        .expect("run tigerbeetle format");
    assert!(
        out.status.success(),
        "tigerbeetle format: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    f
}

/// Runs one `tigerbeetle repl` command against `address` and returns what it printed.
pub fn repl(address: &str, command: &str) -> String {
    repl_cluster(0, address, command)
}

/// [`repl`] against cluster `cluster`.
pub fn repl_cluster(cluster: u128, address: &str, command: &str) -> String {
    let out = Command::new(tool("tigerbeetle"))
        .args([
            "repl",
            &format!("--cluster={cluster}"),
            &format!("--addresses={address}"),
            &format!("--command={command}"),
        ])
        .output()
        .expect("run tigerbeetle repl");
    assert!(
        out.status.success(),
        "repl {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("repl prints UTF-8")
}

/// Every file below `dir` (none if it does not exist).
/// `len` bytes of a fixed pseudo-random pattern (xorshift from `seed`): data
/// that does not compress and differs byte by byte between seeds.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A test directory with a config (TigerBeetle `data_file`, a key, a local or S3
/// store, plus `extra` TOML), for the subcommands' tests.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Setup {
    pub fn bkp(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bkp(&all, &self.env)
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The S3 bucket the config names (an S3 setup's).
    pub fn bucket(&self) -> String {
        fs::read_to_string(&self.config)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("bucket = \""))
            .expect("an S3 setup names its bucket")
            .trim_end_matches('"')
            .to_string()
    }

    /// The ids `bkp --json list ARGS` shows, oldest first.
    pub fn listed(&self, args: &[&str]) -> Vec<String> {
        listed_by(|a| self.bkp(a), args)
    }
}

/// The ids `bkp --json list ARGS` shows, oldest first, run by `bkp`.
pub fn listed_by(bkp: impl Fn(&[&str]) -> Output, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json", "list"];
    all.extend_from_slice(args);
    let out = bkp(&all);
    assert_exit(&out, 0);
    json(&out)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The `[tigerbeetle]` line of tests about snapshots stored as one archive
/// object each (`snapshot_format = "archive"`), which they damage or inspect.
/// Writes a key file, readable by its owner only (bkp refuses a key file
/// its group or others may read, as `bkp key generate` never writes one).
pub fn write_key(path: impl AsRef<Path>, key: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path.as_ref(), key).unwrap();
    fs::set_permissions(path.as_ref(), fs::Permissions::from_mode(0o600)).unwrap();
}

pub const ARCHIVE: &str = "snapshot_format = \"archive\"\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    S3,
}

pub fn setup(data_file: &Path, store: StoreKind, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path().join("key"), [7u8; 32]);
    let (store_toml, env) = match store {
        StoreKind::Local => (
            "[store]\ntype = \"local\"\npath = \"store\"\n".to_string(),
            vec![],
        ),
        StoreKind::S3 => {
            let s3 = shared_s3();
            let bucket = unique_name("snap");
            s3.create_bucket(&bucket);
            (
                format!(
                    "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"team/bkp\"\nendpoint = \"{}\"\npath_style = true\nregion = \"{}\"\npart_size = \"5MiB\"\nconcurrency = 3\n",
                    s3.endpoint, s3.region
                ),
                s3.env(),
            )
        }
    };
    let config = dir.path().join("bkp.toml");
    fs::write(
        &config,
        format!(
            "work_dir = \"work\"\n{store_toml}[encryption]\nkey_file = \"key\"\n[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n{extra}",
            data_file.display(),
            tool("tigerbeetle").display()
        ),
    )
    .unwrap();
    Setup { dir, config, env }
}

/// What a run printed, stdout then stderr, for assertions on messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `t` as RFC 3339, as bkp's flags and config take times.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Takes a snapshot (`--json`), which must succeed; its manifest.
pub fn snapshot_manifest(s: &Setup) -> serde_json::Value {
    let out = s.bkp(&["--json", "snapshot"]);
    assert_exit(&out, 0);
    json(&out)["manifest"].clone()
}

/// The JSON a `--json` run printed.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Seals the manifest at `path` again after a test edited it, as a holder of
/// the key [`setup`] writes (32 bytes of 7) would: for tests that stand for
/// bkp itself, not for an attacker.
pub fn reseal(path: &Path) {
    reseal_with(path, [7u8; 32]);
}

/// [`reseal`] under the key `key` (a setup that writes another).
pub fn reseal_with(path: &Path, key: [u8; 32]) {
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("seal");
    let keys = bkp::crypto::Keyring::new(bkp::crypto::MasterKey::from_bytes(key), Vec::new());
    fs::write(path, bkp::manifest::seal::encode(&v, Some(&keys)).unwrap()).unwrap();
}

// ---- moto (S3 with Object Lock and SSE-KMS) ---------------------------------------------

/// moto's standalone server on 127.0.0.1: an in-memory AWS emulation that, unlike
/// SeaweedFS, implements S3 Object Lock and SSE-KMS (and KMS itself). It accepts any
/// credentials and does not check signatures; region us-east-1.
pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub dir: PathBuf,
    server: Option<Supervised>,
}

/// A raw HTTP answer: status, headers (names lowercased), body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Moto {
    pub fn start() -> Moto {
        retry_port_clash("moto", Self::try_start)
    }

    fn try_start() -> Result<Moto, String> {
        let dir = scratch_dir("moto");
        let port = free_port();
        let spec = Spec {
            program: tool("moto_server"),
            args: vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
            envs: vec![("HOME", dir.display().to_string())],
            grace: S3_STOP_GRACE,
            cleanup: vec![dir.clone()],
        };
        let server = Some(Supervised::spawn(spec, &dir));
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
            server,
        };
        let supervised = moto.server.as_ref().unwrap();
        supervised
            .wait_ready(READY_TIMEOUT, || {
                supervised.listens_on(port) && http_answers(&moto.endpoint)
            })
            .map_err(|e| format!("on {}: {e}", moto.endpoint))?;
        Ok(moto)
    }

    /// One HTTP/1.0 request to `service` ("s3", "kms"); moto routes by the service
    /// named in the (unchecked) SigV4 credential scope.
    pub fn request(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpAnswer {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let raw = lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer from {addr}: {raw}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        HttpAnswer {
            status,
            headers,
            body: body.to_string(),
        }
    }

    /// Creates a bucket with a unique name starting with `prefix`, with Object Lock
    /// enabled (and so versioning) if `locked`; returns its name.
    pub fn new_bucket(&self, prefix: &str, locked: bool) -> String {
        let name = unique_name(prefix);
        let lock: &[(&str, &str)] = if locked {
            &[("x-amz-bucket-object-lock-enabled", "true")]
        } else {
            &[]
        };
        let out = self.request("s3", "PUT", &format!("/{name}"), lock, "");
        assert_eq!(out.status, 200, "create bucket {name}: {}", out.body);
        name
    }

    /// HEAD of `bucket/key`.
    pub fn head(&self, bucket: &str, key: &str) -> HttpAnswer {
        self.request("s3", "HEAD", &format!("/{bucket}/{key}"), &[], "")
    }

    /// The keys in `bucket` (at most 1000).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self.request("s3", "GET", &format!("/{bucket}?list-type=2"), &[], "");
        assert_eq!(out.status, 200, "list {bucket}: {}", out.body);
        out.body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// The keys of every version and delete marker in `bucket` (at most 1000).
    pub fn versions(&self, bucket: &str) -> Vec<String> {
        let out = self.request("s3", "GET", &format!("/{bucket}?versions"), &[], "");
        assert_eq!(out.status, 200, "list versions of {bucket}: {}", out.body);
        out.body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// Sets the governance retention of `bucket/key` to `until`, earlier than it
    /// was (as a user allowed to bypass governance mode may).
    pub fn shorten_retention(&self, bucket: &str, key: &str, until: time::OffsetDateTime) {
        let until = until
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
        );
        let out = self.request(
            "s3",
            "PUT",
            &format!("/{bucket}/{key}?retention"),
            &[("x-amz-bypass-governance-retention", "true")],
            &body,
        );
        assert_eq!(
            out.status, 200,
            "shorten the retention of {key}: {}",
            out.body
        );
    }

    /// Creates a KMS key and returns its id.
    pub fn create_kms_key(&self) -> String {
        let out = self.request(
            "kms",
            "POST",
            "/",
            &[
                ("X-Amz-Target", "TrentService.CreateKey"),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            "{}",
        );
        assert_eq!(out.status, 200, "KMS CreateKey: {}", out.body);
        let doc: serde_json::Value = serde_json::from_str(&out.body).unwrap();
        doc["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
    }

    /// The environment a child `bkp` needs (any credentials do).
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ];
        pairs.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    }

    /// The `[store]` section for `bucket` on this server, plus `extra` keys.
    pub fn store_toml(&self, bucket: &str, extra: &str) -> String {
        format!(
            "[store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"team/bkp\"\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"\npart_size = \"5MiB\"\nconcurrency = 3\n{extra}",
            self.endpoint
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.halt("kill");
        }
        remove_later(&self.dir);
    }
}

/// One moto server for the whole test process, started by the first caller.
pub fn shared_moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// Like [`setup`], with the store in `bucket` on [`shared_moto`] and `store_extra`
/// added to the `[store]` section.
pub fn setup_moto(data_file: &Path, bucket: &str, store_extra: &str, extra: &str) -> Setup {
    let moto = shared_moto();
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path().join("key"), [7u8; 32]);
    let config = dir.path().join("bkp.toml");
    fs::write(
        &config,
        format!(
            "work_dir = \"work\"\n{}[encryption]\nkey_file = \"key\"\n[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\n{extra}",
            moto.store_toml(bucket, store_extra),
            data_file.display(),
            tool("tigerbeetle").display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        env: moto.env(),
    }
}

//! The shipped systemd units and crontab. The units in `systemd/` are generated
//! here from one table (`BKP_BLESS=1 cargo test --test units` rewrites them), so
//! the plain units, the `@` templates (one config per instance) and their sandbox
//! never drift apart. Every unit passes `systemd-analyze verify` (with ExecStart
//! pointing at the built binary), every schedule has a sandboxed oneshot service
//! and a persistent, randomized timer that fires at the schedule's interval, and
//! the crontab runs the same commands at the same intervals.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bkp::schedule::schedules;

/// Every timer: (unit name, bkp arguments, interval in seconds).
fn expected() -> Vec<(&'static str, &'static str, u64)> {
    let mut v: Vec<(&'static str, &'static str, u64)> = schedules()
        .map(|s| {
            (
                s.as_str(),
                s.command().trim_start_matches("bkp "),
                s.default_every().as_secs(),
            )
        })
        .collect();
    v.push(("cleanup", "cleanup", 86400));
    v.push(("verify-drill", "verify --drill", 7 * 86400));
    v.push(("status", "status", 1800));
    v.push(("copy", "copy", 3600));
    v
}

/// One schedule's unit pair, as shipped.
struct Unit {
    name: &'static str,
    what: &'static str,
    page: &'static str,
    args: &'static str,
    cap: &'static str,
    calendar: &'static str,
    every: &'static str,
    delay: &'static str,
    /// Reads a source another user may own (the data file, the DuckDB file, the
    /// Parquet tree): keeps CAP_DAC_READ_SEARCH, and nothing else.
    reads_source: bool,
    note: &'static str,
}

const UNITS: [Unit; 12] = [
    Unit {
        name: "snapshot",
        what: "TigerBeetle data-file snapshot",
        page: "snapshot",
        args: "snapshot --kind tigerbeetle",
        cap: "3h",
        calendar: "00/6:00",
        every: "every 6 hours",
        delay: "10min",
        reads_source: true,
        note: "# snapshot_mode = \"stop\" runs stop_command and start_command (for example\n\
               # systemctl stop/start tigerbeetle.service; systemctl needs the root user).\n\
               # A start_command that launches the replica itself would inherit this\n\
               # sandbox: give it its paths in a drop-in.\n",
    },
    Unit {
        name: "logs",
        what: "TigerBeetle log segment",
        page: "logs",
        args: "logs",
        cap: "1h",
        calendar: "*:00/15",
        every: "every 15 minutes",
        delay: "1min",
        reads_source: false,
        note: "",
    },
    Unit {
        name: "export-full",
        what: "full DuckDB export",
        page: "export",
        args: "export --kind duckdb --full",
        cap: "6h",
        calendar: "01:30",
        every: "daily",
        delay: "15min",
        reads_source: true,
        note: "",
    },
    Unit {
        name: "export-incremental",
        what: "incremental DuckDB export",
        page: "export",
        args: "export --kind duckdb",
        cap: "3h",
        calendar: "03/6:30",
        every: "every 6 hours",
        delay: "10min",
        reads_source: true,
        note: "",
    },
    Unit {
        name: "replicate",
        what: "Parquet cold-tier replication",
        page: "replicate",
        args: "replicate",
        cap: "2h",
        calendar: "*:20",
        every: "hourly",
        delay: "5min",
        reads_source: true,
        note: "",
    },
    Unit {
        name: "pgdump",
        what: "PostgreSQL dump",
        page: "export",
        args: "export --kind pgdump",
        cap: "3h",
        calendar: "*:45",
        every: "hourly",
        delay: "5min",
        reads_source: false,
        note: "# The password is read from postgres.passfile: keep it under /etc/bkp (home\n\
               # directories are hidden from this service), mode 0600.\n",
    },
    Unit {
        name: "pgbase",
        what: "PostgreSQL base backup",
        page: "snapshot",
        args: "snapshot --kind postgres",
        cap: "6h",
        calendar: "02:15",
        every: "daily",
        delay: "15min",
        reads_source: false,
        note: "# pg_basebackup needs a role with REPLICATION and a replication line in\n\
               # pg_hba.conf. The password is read from postgres.passfile, under /etc/bkp.\n",
    },
    Unit {
        name: "sqlite",
        what: "SQLite database copy",
        page: "snapshot",
        args: "snapshot --kind sqlite",
        cap: "1h",
        calendar: "01/6:10",
        every: "every 6 hours",
        delay: "10min",
        reads_source: true,
        note: "# A database in WAL mode is read through its -shm file, which SQLite opens for\n\
               # writing: give the database's directory to ReadWritePaths= in a drop-in.\n",
    },
    Unit {
        name: "cleanup",
        what: "retention cleanup",
        page: "cleanup",
        args: "cleanup",
        cap: "2h",
        calendar: "04:40",
        every: "daily",
        delay: "15min",
        reads_source: false,
        note: "",
    },
    Unit {
        name: "verify-drill",
        what: "restore drill",
        page: "verify",
        args: "verify --drill",
        cap: "12h",
        calendar: "Sun 05:30",
        every: "weekly",
        delay: "30min",
        reads_source: false,
        note: "# The drill restores into a scratch directory under work_dir or the private /tmp.\n",
    },
    Unit {
        name: "copy",
        what: "copies brought up to date with the primary store",
        page: "copy",
        args: "copy",
        cap: "2h",
        calendar: "*:50",
        every: "hourly",
        delay: "5min",
        reads_source: false,
        note: "# Only with [[copies]] in the config (without, it exits 3). A copy in another\n\
               # account reads its keys from the variables its access_key_env and\n\
               # secret_key_env name: put them in the env file too. A local copy's\n\
               # directory must be writable here: add it with ReadWritePaths= in a drop-in.\n",
    },
    Unit {
        name: "status",
        what: "freshness check (fails when an RPO is breached)",
        page: "status",
        args: "status",
        cap: "5min",
        calendar: "*:07/30",
        every: "every 30 minutes",
        delay: "2min",
        reads_source: false,
        note:
            "# Exit 11 (an RPO breached or a schedule that never ran) fails this unit:\n\
               # alert on it with OnFailure= (bkp-onfailure.conf), or watch `systemctl --failed`.\n",
    },
];

/// A service; `template` makes the `@` form: instance `NAME` reads
/// `/etc/bkp/NAME.toml` and `/etc/bkp/NAME.env` and works in `/var/lib/bkp/NAME`.
fn service(u: &Unit, template: bool) -> String {
    let (title, config, env, state) = if template {
        (" (%i)", "/etc/bkp/%i.toml", "/etc/bkp/%i.env", "bkp/%i")
    } else {
        ("", "/etc/bkp/bkp.toml", "/etc/bkp/bkp.env", "bkp")
    };
    let work_dir = if template {
        "# Each instance has its own work_dir (locks, spool, notify state). A\n\
         # work_dir elsewhere (reflink snapshots need the data file's file system):\n\
         # BKP_WORK_DIR in the instance's env file, which wins over this line.\n\
         Environment=BKP_WORK_DIR=/var/lib/bkp/%i\n"
    } else {
        ""
    };
    let caps = if u.reads_source {
        "# Root without root's powers: it may read a source another user owns, and\n\
         # nothing more (no chown, no kill, no raw I/O, no admin).\n\
         CapabilityBoundingSet=CAP_DAC_READ_SEARCH\n"
    } else {
        "# Root without root's powers: no capability at all.\n\
         CapabilityBoundingSet=\n"
    };
    format!(
        "# Generated by tests/units.rs (BKP_BLESS=1 cargo test --test units); edit there.\n\
[Unit]
Description=bkp: {what}{title}
Documentation=man:bkp-{page}(1)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
# On stop (or when the cap is reached) only bkp gets SIGTERM: it aborts its upload,
# removes its scratch and, in snapshot_mode = \"stop\", still runs the start command,
# which must not be killed with it. Everything left is killed after TimeoutStopSec.
KillMode=mixed
TimeoutStopSec=10min
# A hung run is stopped (SIGTERM, then SIGKILL) so that it never blocks its timer.
TimeoutStartSec={cap}
# Secrets (the encryption key in BKP_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
# live in a file only root can read (chmod 600), never in a unit. A key_file under
# /etc/bkp works too (read-only below), or LoadCredential= in a drop-in with
# key_file = \"${{CREDENTIALS_DIRECTORY}}/key\". Endpoints and buckets can be set
# there as BKP_* variables.
EnvironmentFile=-{env}
{work_dir}{note}ExecStart=/usr/local/bin/bkp --config {config} {args}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
UMask=0077
# Sandbox: the whole system read-only but for bkp's work_dir, the local store and
# node_exporter's textfile directory (the last two only where they exist). Using
# other paths? Add them with `systemctl edit`. To run as an unprivileged user, see
# bkp-user.conf.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
NoNewPrivileges=yes
ProtectClock=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# System calls: what a service needs (including io_uring, for the TigerBeetle
# replica a drill or restore starts), none of the privileged ones. A call outside
# the list fails with EPERM (an error bkp reports) rather than killing the run.
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
{caps}# work_dir: /var/lib/{state}, created by systemd, private to its user.
StateDirectory={state}
StateDirectoryMode=0700
ReadWritePaths=-/var/backups/bkp -/var/lib/prometheus/node-exporter
ReadOnlyPaths=/etc/bkp
",
        what = u.what,
        page = u.page,
        cap = u.cap,
        note = u.note,
        args = u.args,
    )
}

fn timer(u: &Unit, template: bool) -> String {
    let title = if template { " (%i)" } else { "" };
    format!(
        "# Generated by tests/units.rs (BKP_BLESS=1 cargo test --test units); edit there.\n\
[Unit]
Description=bkp: {what}{title} {every}
Documentation=man:bkp-{page}(1)

[Timer]
OnCalendar={calendar} UTC
RandomizedDelaySec={delay}
# The same delay every time on this host, so runs stay one interval apart.
FixedRandomDelay=true
# Catch up at boot on a run missed while the machine was off.
Persistent=true

[Install]
WantedBy=timers.target
",
        what = u.what,
        every = u.every,
        page = u.page,
        calendar = u.calendar,
        delay = u.delay,
    )
}

/// Every generated file in `systemd/`, by name.
fn generated() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for u in &UNITS {
        for template in [false, true] {
            let stem = if template {
                format!("bkp-{}@", u.name)
            } else {
                format!("bkp-{}", u.name)
            };
            m.insert(format!("{stem}.service"), service(u, template));
            m.insert(format!("{stem}.timer"), timer(u, template));
        }
    }
    m
}

/// Hand-written files in `systemd/` beside the generated units.
const HAND_WRITTEN: [&str; 3] = [
    "bkp-user.conf",
    "bkp-onfailure.conf",
    "bkp-failure@.service",
];

#[test]
fn the_units_are_generated_from_one_table() {
    let dir = root().join("systemd");
    let want = generated();
    if std::env::var_os("BKP_BLESS").is_some() {
        for (name, text) in &want {
            fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut stale = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if HAND_WRITTEN.contains(&name.as_str()) {
            continue;
        }
        match want.get(&name) {
            Some(text) if fs::read_to_string(dir.join(&name)).unwrap() == *text => {}
            _ => stale.push(name),
        }
    }
    for name in want.keys() {
        if !dir.join(name).exists() {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "systemd/ differs from tests/units.rs for {stale:?}: run BKP_BLESS=1 cargo test --test units"
    );
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `key=value` settings of a unit file (last one wins), comments skipped.
fn settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn systemd_analyze() -> PathBuf {
    let p = PathBuf::from("/usr/bin/systemd-analyze");
    assert!(
        p.is_file(),
        "systemd-analyze is missing: run scripts/bootstrap (it installs Debian's `systemd` package)"
    );
    p
}

/// Seconds between the first iterations of an OnCalendar expression, per systemd.
fn calendar_gaps(expr: &str) -> Vec<i64> {
    let out = Command::new(systemd_analyze())
        .args(["calendar", "--iterations=4", expr])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<i64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            let k = k.trim();
            (k == "Next elapse" || k.starts_with("Iter.")).then(|| v.trim().to_string())
        })
        .map(|v| {
            // "Sun 2026-11-22 18:00:00 UTC"
            let parts: Vec<&str> = v.split_whitespace().collect();
            let fmt =
                time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
            time::PrimitiveDateTime::parse(&format!("{} {}", parts[1], parts[2]), &fmt)
                .unwrap_or_else(|e| panic!("{v}: {e}"))
                .assume_utc()
                .unix_timestamp()
        })
        .collect();
    assert_eq!(times.len(), 4, "{text}");
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Copies of the shipped units in `dir`, ready for `systemd-analyze`: ExecStart
/// names the built binary, templates become an instance (`@example`), and each
/// drop-in is applied to a unit of its own (`bkp-logs-user.service` gets
/// `bkp-user.conf`…). Returns the unit files to check.
fn installable_copies(dir: &Path) -> Vec<PathBuf> {
    let bin = env!("CARGO_BIN_EXE_bkp");
    let mut units = Vec::new();
    let logs = fs::read_to_string(root().join("systemd/bkp-logs.service")).unwrap();
    for e in fs::read_dir(root().join("systemd")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        // The unit must name the installed binary; the check needs one that exists.
        if name.ends_with(".service") {
            assert!(text.contains("ExecStart=/usr/local/bin/bkp "), "{name}");
        }
        let text = text.replace("/usr/local/bin/bkp", bin);
        if let Some(stem) = name.strip_suffix(".conf") {
            let unit = dir.join(format!("{stem}.service"));
            fs::write(&unit, logs.replace("/usr/local/bin/bkp", bin)).unwrap();
            let d = dir.join(format!("{stem}.service.d"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(&name), text).unwrap();
            units.push(unit);
            continue;
        }
        let name = name.replace("@.", "@example.");
        let copy = dir.join(&name);
        fs::write(&copy, text).unwrap();
        units.push(copy);
    }
    units.sort();
    units
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = installable_copies(dir.path());
    assert_eq!(
        units.len(),
        4 * expected().len() + HAND_WRITTEN.len(),
        "{units:?}"
    );
    let out = Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .unwrap();
    // verify exits 0 on unknown keys and bad values ("…, ignoring"): any output fails.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The sandbox stays tight: `systemd-analyze security` rates every service
/// (plain, template instance, and with each drop-in) at an exposure of 2.0 or
/// less (the shipped units were 6.9 before their capabilities, system calls and
/// namespaces were bounded).
#[test]
fn every_service_keeps_its_exposure_low() {
    let dir = tempfile::tempdir().unwrap();
    for unit in installable_copies(dir.path()) {
        if unit.extension().is_some_and(|e| e != "service") {
            continue;
        }
        let out = Command::new(systemd_analyze())
            .args(["security", "--offline=true", "--threshold=20"])
            .arg(&unit)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no overall exposure level");
        assert!(
            out.status.success(),
            "{}: {overall}\n{}",
            unit.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_schedule_has_a_sandboxed_oneshot_service_and_timer() {
    for (name, args, every) in expected() {
        let unit = root().join(format!("systemd/bkp-{name}"));
        let service = fs::read_to_string(unit.with_extension("service"))
            .unwrap_or_else(|e| panic!("bkp-{name}.service: {e}"));
        let s = settings(&service);
        assert_eq!(
            s["ExecStart"],
            format!("/usr/local/bin/bkp --config /etc/bkp/bkp.toml {args}"),
            "{name}"
        );
        for (k, v) in [
            ("Type", "oneshot"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("StateDirectory", "bkp"),
            ("EnvironmentFile", "-/etc/bkp/bkp.env"),
            ("KillMode", "mixed"),
        ] {
            assert_eq!(s.get(k).map(String::as_str), Some(v), "{name}: {k}");
        }
        // No secret in a unit.
        for secret in ["AWS_SECRET_ACCESS_KEY=", "BKP_KEY=", "Environment="] {
            assert!(
                !service.lines().any(|l| l.starts_with(secret)),
                "{name}: {secret}"
            );
        }
        // A hung run never blocks its timer forever.
        assert!(s.contains_key("TimeoutStartSec"), "{name}: no runtime cap");
        let timer = fs::read_to_string(unit.with_extension("timer")).unwrap();
        let t = settings(&timer);
        assert!(
            t["OnCalendar"].ends_with(" UTC"),
            "{name}: timers run in UTC"
        );
        assert_eq!(t["Persistent"], "true", "{name}");
        assert!(t.contains_key("RandomizedDelaySec"), "{name}");
        let gaps = calendar_gaps(&t["OnCalendar"]);
        assert!(
            gaps.iter().all(|g| *g == every as i64),
            "{name}: OnCalendar={} fires {gaps:?} s apart, expected {every}",
            t["OnCalendar"]
        );
    }
}

/// The interval of the simple cron expressions the example uses.
fn cron_interval(min: &str, hour: &str, dow: &str) -> u64 {
    let step = |f: &str| f.split_once('/').map(|(_, n)| n.parse::<u64>().unwrap());
    if let Some(n) = step(min) {
        return n * 60;
    }
    if min.contains(',') {
        return 3600 / min.split(',').count() as u64;
    }
    if hour == "*" {
        return 3600;
    }
    if let Some(n) = step(hour) {
        return n * 3600;
    }
    if dow != "*" {
        return 7 * 86400;
    }
    86400
}

#[test]
fn the_crontab_runs_every_schedule_at_the_same_interval() {
    let text = fs::read_to_string(root().join("examples/crontab")).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "CRON_TZ=UTC"),
        "the crontab runs in UTC"
    );
    let mut found = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let first = line.split_whitespace().next().unwrap_or("");
        if line.is_empty() || line.starts_with('#') || first.contains('=') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[5], "root", "{line}");
        let (_, cmd) = line
            .split_once("exec bkp --quiet ")
            .unwrap_or_else(|| panic!("not a bkp line: {line}"));
        let args = cmd.trim_end_matches(">/dev/null").trim().to_string();
        assert!(
            line.contains(". /etc/bkp/bkp.env"),
            "{line}: reads secrets from the env file"
        );
        found.insert(args, cron_interval(f[0], f[1], f[4]));
    }
    let want: BTreeMap<String, u64> = expected()
        .into_iter()
        .map(|(_, args, every)| (args.to_string(), every))
        .collect();
    assert_eq!(found, want);
}

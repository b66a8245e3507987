//! The shipped systemd units and crontab: every unit passes `systemd-analyze
//! verify` (with ExecStart pointing at the built binary), every schedule has a
//! sandboxed oneshot service and a persistent, randomized timer that fires at the
//! schedule's interval, and the crontab runs the same commands at the same
//! intervals.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bkp::schedule::Schedule;

/// Every timer: (unit name, bkp arguments, interval in seconds).
fn expected() -> Vec<(&'static str, &'static str, u64)> {
    let mut v: Vec<(&'static str, &'static str, u64)> = Schedule::ALL
        .into_iter()
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
    v
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

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_bkp");
    let mut units = Vec::new();
    for e in fs::read_dir(root().join("systemd")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        // The unit must name the installed binary; the check needs one that exists.
        if name.ends_with(".service") {
            assert!(text.contains("ExecStart=/usr/local/bin/bkp "), "{name}");
        }
        let copy = dir.path().join(&name);
        fs::write(&copy, text.replace("/usr/local/bin/bkp", bin)).unwrap();
        units.push(copy);
    }
    units.sort();
    assert_eq!(units.len(), 2 * expected().len(), "{units:?}");
    let out = Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .args(&units)
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

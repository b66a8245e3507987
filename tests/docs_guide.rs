//! The operator guide and the runbooks are run, not only read: every `sh`
//! block of their chapters is executed, in the order of [`SESSION`], as one
//! shell script in a scratch directory, with the real `bkp` and `tigerbeetle`
//! binaries first on the `PATH`; the README's first try runs on its own. A
//! `toml` block whose first line is `# NAME.toml` is the file NAME, written
//! where the script stands at that point (the reader is told to write it
//! there); other `toml` blocks are fragments shown for reading.
//!
//! What a page cannot say for the test, the test says between the chapters
//! ([`SESSION`]'s glue, visible here), and a few rewrites make a page's host
//! paths this machine's, nothing else:
//! - `/usr/local/bin/tigerbeetle` becomes the binary `scripts/bootstrap`
//!   installed;
//! - `/etc/`, `/var/lib/` and `/mnt/` move under a scratch root, so that the
//!   chapters that install units, rules and keys write there;
//! - `systemctl`, `journalctl` and `adduser` are stand-ins that record their
//!   call and fail when it names a unit that is not installed under that root
//!   (this machine has no systemd to run them).
//!
//! Every `sh` block of `docs/src/guide/` and `docs/src/runbooks/` is run or
//! listed in [`NOT_RUN`] with the reason, so a block added to a page is run or
//! explained.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The chapters run as one script, in order: the page, how many `sh` blocks
/// it must have (so that a block dropped by an edit is noticed), and the glue
/// the test runs before it.
const SESSION: &[(&str, usize, &str)] = &[
    ("docs/src/guide/first-backup.md", 6, ""),
    // The page ends inside bkp-first-try; an installed host has its config
    // at the default path, as the next pages assume.
    (
        "docs/src/guide/drills.md",
        1,
        "export BKP_CONFIG=\"$PWD/bkp.toml\"",
    ),
    (
        "docs/src/runbooks/break-glass.md",
        1,
        "mkdir break-glass && cd break-glass",
    ),
    // The page's copies are S3 buckets in two regions; here one local copy
    // with the name the page's commands use.
    (
        "docs/src/guide/copies.md",
        2,
        "cd .. && printf '%s\\n' '[[copies]]' 'name = \"dr\"' 'type = \"local\"' 'path = \"dr\"' >> bkp.toml",
    ),
    ("docs/src/guide/keys.md", 2, ""),
    // Units and rules are installed from the checkout.
    ("docs/src/guide/schedules.md", 5, "cd \"$BKP_DOC_REPO\""),
    ("docs/src/guide/monitoring.md", 1, ""),
];

/// `sh` blocks not run, with the reason.
const NOT_RUN: &[(&str, &str)] = &[(
    "docs/src/guide/install.md",
    "builds the release package (most of an hour) and installs it with apt; scripts/package \
     checks the package it builds",
)];

/// Stand-ins for the host commands the schedules chapter runs.
const SHIMS: &[(&str, &str)] = &[
    (
        "systemctl",
        r#"echo "systemctl $*" >> "$BKP_DOC_ROOT/calls"
units="$BKP_DOC_ROOT/etc/systemd/system"
installed() { [ -f "$units/$(printf %s "$1" | sed -E 's/@[^.]+\./@./')" ] || { echo "systemctl: $1 is not installed in $units" >&2; exit 1; }; }
case "$1" in
  daemon-reload) ;;
  enable) shift; for u in "$@"; do [ "$u" = --now ] || installed "$u"; done ;;
  list-timers) ;;
  edit) installed "$2" ;;
  *) echo "systemctl: no stand-in for $1" >&2; exit 1 ;;
esac"#,
    ),
    (
        "journalctl",
        r#"echo "journalctl $*" >> "$BKP_DOC_ROOT/calls"
while [ $# -gt 0 ]; do
  if [ "$1" = -u ]; then
    compgen -G "$BKP_DOC_ROOT/etc/systemd/system/$2" >/dev/null || { echo "journalctl: no unit matches $2" >&2; exit 1; }
    shift
  fi
  shift
done"#,
    ),
    ("adduser", r#"echo "adduser $*" >> "$BKP_DOC_ROOT/calls""#),
];

/// `sh` blocks of `chapter` as script lines, and how many there were.
fn blocks(chapter: &str, skip: usize) -> (String, usize) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(chapter)).unwrap();
    let mut skip = skip;
    let tigerbeetle = common::tool("tigerbeetle");
    let host = |body: String| {
        body.replace("/usr/local/bin/tigerbeetle", tigerbeetle.to_str().unwrap())
            .replace(" /etc/", " $BKP_DOC_ROOT/etc/")
            .replace(" /var/lib/", " $BKP_DOC_ROOT/var/lib/")
            .replace(" /mnt/", " $BKP_DOC_ROOT/mnt/")
    };
    let mut out = String::new();
    let mut count = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        match lang {
            "sh" if skip > 0 => skip -= 1,
            "sh" => {
                count += 1;
                out.push_str(&host(body.join("\n")));
                out.push('\n');
            }
            "toml" => {
                let Some(name) = body
                    .first()
                    .and_then(|l| l.strip_prefix("# "))
                    .filter(|n| n.ends_with(".toml") && !n.contains(' '))
                else {
                    continue;
                };
                out.push_str(&format!(
                    "cat > '{name}' <<'BKP_DOC_EOF'\n{}\nBKP_DOC_EOF\n",
                    host(body.join("\n"))
                ));
            }
            _ => {}
        }
    }
    (out, count)
}

/// Runs `script` in a fresh scratch directory with the binaries and the
/// stand-ins on the `PATH`; returns the directory and the scratch root.
fn run(what: &str, script: &str) -> tempfile::TempDir {
    // The first try takes its config from the environment only where no
    // config file is installed: on such a host it would read that one.
    assert!(
        !Path::new("/etc/bkp/bkp.toml").exists(),
        "/etc/bkp/bkp.toml exists on this machine: the pages' commands would read it; run \
         these tests where bkp is not installed"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let root = dir.path().join("root");
    std::fs::create_dir(&bin).unwrap();
    for d in [
        "etc/systemd/system",
        "etc/prometheus/rules",
        "etc/bkp",
        "var/lib",
        "mnt/nas",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(common::bkp_bin(), bin.join("bkp")).unwrap();
    std::os::unix::fs::symlink(common::tool("tigerbeetle"), bin.join("tigerbeetle")).unwrap();
    for (name, body) in SHIMS {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\nset -eu\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -euxo pipefail\n{script}"))
        .current_dir(&work);
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("LANG", "C.UTF-8")
        .env("BKP_DOC_ROOT", &root)
        .env("BKP_DOC_REPO", env!("CARGO_MANIFEST_DIR"));
    let out = common::run(&mut cmd, None, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "{what}: the commands failed ({:?})\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn the_guide_and_the_runbooks_run_as_written() {
    let mut script = String::new();
    for (chapter, want, glue) in SESSION {
        let (body, count) = blocks(chapter, 0);
        assert_eq!(
            count, *want,
            "{chapter}: expected {want} sh blocks, found {count}: update SESSION if the chapter changed on purpose"
        );
        script.push_str(&format!("# --- {chapter}\n{glue}\n{body}"));
    }
    let dir = run("the guide", &script);
    let work = dir.path().join("work/bkp-first-try");
    let root = dir.path().join("root");
    for made in [
        work.join("restored/0_0.tigerbeetle"),
        work.join("bkp-verify.xml"),
        work.join("break-glass/0_0.tigerbeetle"),
        root.join("var/lib/tigerbeetle-restored/0_0.tigerbeetle"),
        root.join("etc/bkp/identity"),
        root.join("etc/bkp/signing.key"),
        root.join("etc/systemd/system/bkp-logs.service.d/onfailure.conf"),
        root.join("etc/prometheus/rules/bkp.yml"),
    ] {
        assert!(made.is_file(), "the guide did not make {}", made.display());
    }
    // The break-glass copy is the data file the first chapter backed up.
    assert_eq!(
        std::fs::read(work.join("break-glass/0_0.tigerbeetle")).unwrap(),
        std::fs::read(work.join("0_0.tigerbeetle")).unwrap()
    );
    let calls = std::fs::read_to_string(root.join("calls")).unwrap();
    assert!(
        calls.contains("systemctl enable --now bkp-snapshot.timer"),
        "{calls}"
    );
}

#[test]
fn the_readme_first_try_runs_as_written() {
    // The README's first block is the project's own set-up.
    let (script, count) = blocks("README.md", 1);
    assert_eq!(count, 1, "README.md: expected 1 first-try block");
    let dir = run("README.md", &script);
    assert!(dir.path().join("work/restored/0_0.tigerbeetle").is_file());
}

/// Every `sh` block of the guide and the runbooks is run above or listed as not run.
#[test]
fn every_block_of_the_guide_and_the_runbooks_is_run_or_explained() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["docs/src/guide", "docs/src/runbooks"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            let (_, count) = blocks(&name, 0);
            let run = SESSION.iter().any(|(c, ..)| *c == name);
            let explained = NOT_RUN.iter().any(|(c, _)| *c == name);
            assert!(
                count == 0 || run || explained,
                "{name} has {count} sh blocks that no test runs: add it to SESSION or NOT_RUN"
            );
        }
    }
}

//! The operator guide is run, not only read: every `sh` block of the chapters
//! below is executed in order, as one shell script, in a scratch directory,
//! with the real `bkp` and `tigerbeetle` binaries first on the `PATH`. A `toml`
//! block whose first line is `# NAME` is the file NAME, written where the
//! script stands at that point (the reader is told to write it there).
//!
//! One substitution makes the page's absolute path this machine's:
//! `/usr/local/bin/tigerbeetle` becomes the TigerBeetle binary that
//! `scripts/bootstrap` installed; nothing else is rewritten.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The pages whose commands are executed (from the repository's root), how
/// many `sh` blocks to pass over first (the README's first block is the
/// project's own set-up), and how many must follow (so that a block dropped by
/// an edit is noticed).
const RUN: &[(&str, usize, usize)] = &[
    ("docs/src/guide/first-backup.md", 0, 6),
    ("README.md", 1, 1),
];

/// The chapter's blocks as one `bash` script.
fn script(chapter: &str, skip: usize) -> (String, usize) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(chapter)).unwrap();
    let mut skip = skip;
    let tigerbeetle = common::tool("tigerbeetle");
    let mut out = String::from("set -euxo pipefail\n");
    let mut blocks = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        match lang {
            "sh" if skip > 0 => skip -= 1,
            "sh" => {
                blocks += 1;
                out.push_str(&body.join("\n"));
                out.push('\n');
            }
            "toml" => {
                let name = body
                    .first()
                    .and_then(|l| l.strip_prefix("# "))
                    .unwrap_or_else(|| panic!("{chapter}: a toml block must open with `# FILE`"));
                let body = body
                    .join("\n")
                    .replace("/usr/local/bin/tigerbeetle", tigerbeetle.to_str().unwrap());
                out.push_str(&format!(
                    "cat > '{name}' <<'BKP_DOC_EOF'\n{body}\nBKP_DOC_EOF\n"
                ));
            }
            _ => {}
        }
    }
    (out, blocks)
}

#[test]
fn the_guide_and_the_readme_run_as_written() {
    for (chapter, skip, want) in RUN {
        let (script, blocks) = script(chapter, *skip);
        assert_eq!(
            blocks, *want,
            "{chapter}: expected {want} sh blocks, found {blocks}: update RUN if the chapter changed on purpose"
        );
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(common::bkp_bin(), bin.join("bkp")).unwrap();
        std::os::unix::fs::symlink(common::tool("tigerbeetle"), bin.join("tigerbeetle")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(&script).current_dir(dir.path());
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", dir.path())
            .env("LANG", "C.UTF-8");
        let out = common::run(&mut cmd, None, Duration::from_secs(600));
        assert!(
            out.status.success(),
            "{chapter}: the commands failed ({:?})\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Both restore the snapshot they took: the data file must be there.
        let restored = match *chapter {
            "README.md" => dir.path().join("restored/0_0.tigerbeetle"),
            _ => dir.path().join("bkp-first-try/restored/0_0.tigerbeetle"),
        };
        assert!(restored.is_file(), "{chapter}: no restored data file");
    }
}

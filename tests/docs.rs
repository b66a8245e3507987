//! The man pages under `man/` and the completions under `completions/` are
//! generated from the clap definitions. This test regenerates them and fails when
//! the committed files drift; `BKP_BLESS=1 cargo test --test docs` rewrites them.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

fn generate() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = bkp::cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .unwrap();
    out.push((PathBuf::from("man/bkp.1"), page));
    for sub in cmd.get_subcommands() {
        let name = format!("bkp-{}", sub.get_name());
        let name: &'static str = Box::leak(name.into_boxed_str());
        let sub = sub.clone().name(name);
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page).unwrap();
        out.push((PathBuf::from(format!("man/{name}.1")), page));
    }
    for (shell, file) in [
        (Shell::Bash, "bkp.bash"),
        (Shell::Zsh, "_bkp"),
        (Shell::Fish, "bkp.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut bkp::cli::command(), "bkp", &mut buf);
        out.push((PathBuf::from(format!("completions/{file}")), buf));
    }
    out
}

#[test]
fn man_pages_and_completions_match_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("BKP_BLESS").is_some();
    let mut stale = Vec::new();
    for (rel, content) in generate() {
        let path = root.join(&rel);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are out of date: {stale:?}; run `BKP_BLESS=1 cargo test --test docs` and commit them"
    );
}

/// Test hooks (`BKP_NOW`, failpoints) are not for operators: no help text, man
/// page or completion mentions them.
#[test]
fn test_hooks_stay_out_of_the_help() {
    for (rel, content) in generate() {
        let text = String::from_utf8_lossy(&content);
        for hook in ["BKP_NOW", "BKP_FAILPOINT"] {
            assert!(!text.contains(hook), "{} mentions {hook}", rel.display());
        }
    }
    let mut cmd = bkp::cli::command();
    let help = cmd.render_long_help().to_string();
    assert!(!help.contains("BKP_NOW"), "{help}");
}

/// `bkp --version` names the commit the binary was built from (when built in a
/// git checkout), so a report or a bug can be tied to its source.
#[test]
fn the_long_version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bkp"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(concat!("bkp ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        let commit = String::from_utf8_lossy(&h.stdout).trim().to_string();
        assert!(
            text.contains(&format!("(commit {commit})")),
            "{text} vs {commit}"
        );
    }
}

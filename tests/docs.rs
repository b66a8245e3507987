//! The man pages under `man/` and the completions under `completions/` are
//! generated from the clap definitions (plus the EXIT STATUS, ENVIRONMENT, FILES
//! and SEE ALSO sections of `docs/sections.rs`). This test regenerates them and
//! fails when the committed files drift; `BKP_BLESS=1 cargo test --test docs`
//! rewrites them. Other tests keep the documentation honest: every environment
//! variable the source reads is documented, test hooks are not, and
//! `man/bkp.toml.5` names exactly the keys the config accepts.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

#[path = "docs/config_keys.rs"]
mod config_keys;
#[path = "docs/sections.rs"]
mod sections;

/// clap_mangen's page with our sections in place of its EXTRA section (the
/// one-line exit-code summary of `--help`), before VERSION.
fn page(cmd: clap::Command, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<&str> = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with(".SH ") {
            skipping = line == ".SH EXTRA";
        }
        if !skipping {
            lines.push(line);
        }
    }
    let ours = sections::render(name);
    let at = lines
        .iter()
        .position(|l| *l == ".SH VERSION")
        .unwrap_or(lines.len());
    lines.splice(at..at, ours.lines());
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

fn generate() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = bkp::cli::command();
    out.push((PathBuf::from("man/bkp.1"), page(cmd.clone(), "bkp")));
    for sub in cmd.get_subcommands() {
        let name = format!("bkp-{}", sub.get_name());
        let name: &'static str = Box::leak(name.into_boxed_str());
        let sub = sub.clone().name(name);
        out.push((PathBuf::from(format!("man/{name}.1")), page(sub, name)));
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

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn man_pages_and_completions_match_the_cli() {
    let bless = std::env::var_os("BKP_BLESS").is_some();
    let mut stale = Vec::new();
    for (rel, content) in generate() {
        let path = root().join(&rel);
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

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The environment variable names in `code`: upper-case string literals
/// passed to `var(…)`, `var_os(…)`, a child's `.env(…)` or clap's `env = …`,
/// and `&str` constants that look like variable names (`NOW_ENV = "BKP_NOW"`;
/// these need an underscore).
fn variable_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for needle in ["var(", "var_os(", ".env(", "env = ", "&str = "] {
        for (at, _) in code.match_indices(needle) {
            let rest = code[at + needle.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            let looks_like_a_variable = name.len() > 2
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && (needle != "&str = " || name.contains('_'))
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if looks_like_a_variable {
                names.push(name);
            }
        }
    }
    names
}

/// Every variable the non-test source reads (or sets for a child), as found
/// by [`variable_names`].
fn variables_in_source() -> std::collections::BTreeMap<String, PathBuf> {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut found = std::collections::BTreeMap::new();
    for f in files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests sit at the end of a file, in `#[cfg(test)] mod tests`.
        let code = text.split("#[cfg(test)]\nmod ").next().unwrap();
        for name in variable_names(code) {
            found
                .entry(name)
                .or_insert_with(|| f.strip_prefix(root()).unwrap().to_path_buf());
        }
    }
    found
}

/// The ENVIRONMENT section of a rendered page.
fn environment_section(page: &str) -> &str {
    let start = page
        .find(".SH ENVIRONMENT")
        .expect("no ENVIRONMENT section");
    let end = page[start + 1..]
        .find(".SH ")
        .map_or(page.len(), |e| start + 1 + e);
    &page[start..end]
}

#[test]
fn every_variable_the_source_reads_is_documented() {
    let found = variables_in_source();
    // The scan finds what it should: a variable read through a constant, one
    // from clap, one set for a child, one read by a closure.
    for known in [
        "BKP_NOW",
        "BKP_CONFIG",
        "BKP_EVENT",
        "BKP_WORK_DIR",
        "JOURNAL_STREAM",
        "HOSTNAME",
    ] {
        assert!(
            found.contains_key(known),
            "the scan missed {known}: {found:?}"
        );
    }
    let page = String::from_utf8(page(bkp::cli::command(), "bkp")).unwrap();
    let env = environment_section(&page).replace("\\-", "-");
    let missing: Vec<String> = found
        .iter()
        .filter(|(name, _)| !sections::TEST_HOOKS.contains(&name.as_str()))
        .filter(|(name, _)| !env.contains(name.as_str()))
        .map(|(name, file)| format!("{name} (read in {})", file.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "variables bkp reads but bkp(1) ENVIRONMENT does not list (add them to tests/docs/sections.rs, or to TEST_HOOKS if only tests set them): {missing:?}"
    );
    for hook in sections::TEST_HOOKS {
        assert!(
            found.contains_key(*hook),
            "{hook} is in TEST_HOOKS but the source no longer reads it: remove it there"
        );
    }
}

/// Every help text, of every subcommand at every depth, labelled.
fn help_texts(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    out.push((format!("{path} --help"), cmd.render_long_help().to_string()));
    for sub in cmd.get_subcommands_mut() {
        let path = format!("{path} {}", sub.get_name());
        help_texts(sub, &path, out);
    }
}

#[test]
fn test_hooks_stay_out_of_the_documentation() {
    let mut texts = Vec::new();
    let mut cmd = bkp::cli::command();
    cmd.build();
    help_texts(&mut cmd, "bkp", &mut texts);
    let mut files = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    for dir in ["man", "completions", "examples", "systemd"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        texts.push((f.display().to_string(), text.replace("\\-", "-")));
    }
    assert!(texts.len() > 20, "too few texts: {}", texts.len());
    for hook in sections::TEST_HOOKS {
        for (what, text) in &texts {
            assert!(
                !text.contains(hook),
                "{hook} is a test hook but appears in {what}"
            );
        }
    }
}

#[test]
fn the_config_page_documents_exactly_the_accepted_keys() {
    config_keys::check(root());
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to
/// hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The `##` and `###` headings of a Markdown text, outside code blocks, with
/// their level.
fn headings(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
        } else if !code {
            for (level, mark) in [(2, "## "), (3, "### ")] {
                if let Some(h) = line.strip_prefix(mark) {
                    out.push((level, h.to_string()));
                }
            }
        }
    }
    out
}

/// The README's table of contents lists every section in order, and every
/// `(#anchor)` link in the README and the CHANGELOG (and from the README into
/// the CHANGELOG) names a heading that exists.
#[test]
fn readme_contents_and_links_match_the_headings() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md")).unwrap();
    let sections: Vec<_> = headings(&readme)
        .into_iter()
        .filter(|(_, h)| h != "Contents")
        .collect();
    let wanted: Vec<String> = sections
        .iter()
        .map(|(level, h)| {
            let indent = if *level == 2 { "" } else { "  " };
            format!("{indent}- [{h}](#{})", anchor(h))
        })
        .collect();
    let start = readme
        .find("## Contents\n\n")
        .expect("README: no ## Contents")
        + 13;
    let listed: Vec<&str> = readme[start..]
        .lines()
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        listed,
        wanted,
        "README.md's Contents must list every ## and ### heading in order; expected:\n{}",
        wanted.join("\n")
    );
    for (file, text, targets) in [
        (
            "README.md",
            &readme,
            vec![("", &readme), ("CHANGELOG.md", &changelog)],
        ),
        ("CHANGELOG.md", &changelog, vec![("", &changelog)]),
    ] {
        for (prefix, target) in targets {
            let needle = format!("]({prefix}#");
            let anchors: Vec<String> = headings(target).iter().map(|(_, h)| anchor(h)).collect();
            for (at, _) in text.match_indices(&needle) {
                let rest = &text[at + needle.len()..];
                let link = &rest[..rest.find(')').unwrap()];
                assert!(
                    anchors.iter().any(|a| a == link),
                    "{file}: the link to {prefix}#{link} names no heading"
                );
            }
        }
    }
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

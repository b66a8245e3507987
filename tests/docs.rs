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
            // A `help` page lists no subcommands of its own: `bkp help X`
            // is `bkp X --help`, and bkp-X(1) is its page.
            skipping =
                line == ".SH EXTRA" || (name.ends_with("-help") && line == ".SH SUBCOMMANDS");
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

/// A page for every subcommand and sub-subcommand (`bkp-wal-push(1)`), help
/// included: each page's SUBCOMMANDS section names them all.
fn subcommand_pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for sub in cmd.get_subcommands() {
        let name = format!("{prefix}-{}", sub.get_name());
        let name: &'static str = Box::leak(name.into_boxed_str());
        let sub = sub.clone().name(name);
        out.push((
            PathBuf::from(format!("man/{name}.1")),
            page(sub.clone(), name),
        ));
        if sub.get_subcommands().next().is_some() && !name.ends_with("-help") {
            subcommand_pages(&sub, name, out);
        }
    }
}

fn generate() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cmd = bkp::cli::command();
    cmd.build();
    out.push((PathBuf::from("man/bkp.1"), page(cmd.clone(), "bkp")));
    subcommand_pages(&cmd, "bkp", &mut out);
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

/// Every page a man page names (`bkp-wal-push(1)`, `bkp.toml(5)`) exists.
#[test]
fn every_man_page_referenced_exists() {
    let mut missing = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(root().join("man")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path())
            .unwrap()
            .replace("\\-", "-");
        for (at, _) in text.match_indices("bkp") {
            let rest = &text[at..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                .collect();
            let after = &rest[name.len()..];
            if let Some(section) = after.strip_prefix('(').and_then(|a| a.chars().next()) {
                if after[2..].starts_with(')') && section.is_ascii_digit() {
                    let file = root().join(format!("man/{name}.{section}"));
                    if !file.exists() {
                        missing.insert(format!("{name}({section})"));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "man pages referenced but missing: {missing:?}"
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
    markdown(&root().join("docs/src"), &mut files);
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

// ---- The manual (docs/, an mdBook) ----------------------------------------------------

/// Every Markdown file under `dir`, recursively.
fn markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            markdown(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// The anchors of every heading (`#` to `######`) of a Markdown text, outside
/// code blocks, as mdBook and GitHub make them.
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
        } else if !code && line.starts_with('#') {
            let h = line.trim_start_matches('#');
            if h.starts_with(' ') {
                out.push(anchor(h));
            }
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of a Markdown text,
/// outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            continue;
        }
        // Drop code spans: a `](x)` inside backticks is not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        for (at, _) in plain.match_indices("](") {
            let rest = &plain[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

/// Every relative link of the README, the CHANGELOG and the manual names a
/// file that exists, and its `#anchor` a heading of that file; the manual's
/// links stay inside the book.
#[test]
fn every_link_of_the_documentation_resolves() {
    let mut files = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    markdown(&root().join("docs/src"), &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, frag) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            if !target.exists() {
                broken.push(format!("{name}: {link}: no such file"));
                continue;
            }
            // The book is built from docs/src alone: a link out of it is
            // broken in the rendered book (name the file in text instead).
            let book = root().join("docs/src").canonicalize().unwrap();
            let inside = |p: &PathBuf| p.canonicalize().unwrap().starts_with(&book);
            if inside(file) && !inside(&target) {
                broken.push(format!("{name}: {link}: leaves the book (docs/src)"));
                continue;
            }
            if !frag.is_empty() {
                let ok = target.extension().is_some_and(|x| x == "md")
                    && anchors(&std::fs::read_to_string(&target).unwrap())
                        .iter()
                        .any(|a| a == frag);
                if !ok {
                    broken.push(format!("{name}: {link}: no heading #{frag} there"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `docs/src/SUMMARY.md` lists every chapter under `docs/src`, so no page is
/// left out of the book.
#[test]
fn the_book_lists_every_chapter() {
    let src = root().join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: Vec<String> = links(&summary);
    let mut files = Vec::new();
    markdown(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .filter(|f| f != "SUMMARY.md" && !listed.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "chapters under docs/src that SUMMARY.md does not list: {missing:?}"
    );
}

/// roff's inline markup as Markdown: `\fB…\fR` becomes code, `\-` a hyphen.
fn roff_inline(line: &str) -> String {
    line.replace("\\-", "-")
        .replace("\\fB", "`")
        .replace("\\fR", "`")
}

/// `docs/src/reference/configuration.md`, made from `man/bkp.toml.5`: one
/// source for both, so the book's reference never drifts from the page.
fn configuration_reference() -> String {
    let page = std::fs::read_to_string(root().join("man/bkp.toml.5")).unwrap();
    let mut out = String::from(
        "# Configuration keys\n\n\
         <!-- Made from man/bkp.toml.5 by tests/docs.rs: edit the page, then run\n     \
         `BKP_BLESS=1 cargo test --test docs`. -->\n\n\
         The configuration file, key by key: the same text as `man bkp.toml`.\n",
    );
    let mut section = String::new();
    let mut preformatted = false;
    let mut term = false;
    for line in page.lines() {
        if preformatted {
            if line == ".fi" {
                out.push_str("```\n");
                preformatted = false;
            } else {
                out.push_str(&line.replace("\\-", "-"));
                out.push('\n');
            }
            continue;
        }
        if let Some(h) = line.strip_prefix(".SH ") {
            section = h.trim_matches('"').to_string();
            if !matches!(section.as_str(), "NAME" | "SYNOPSIS" | "SEE ALSO") {
                let title = match section.as_str() {
                    "DESCRIPTION" => "Description".to_string(),
                    "TOP LEVEL" => "Top level".to_string(),
                    "EXAMPLE" => "Example".to_string(),
                    "FILES" => "Files".to_string(),
                    s => format!("`{s}`"),
                };
                out.push_str(&format!("\n## {title}\n"));
            }
            continue;
        }
        if matches!(section.as_str(), "NAME" | "SYNOPSIS" | "SEE ALSO") || line.starts_with(".TH") {
            continue;
        }
        match line {
            ".PP" | ".br" => out.push('\n'),
            ".TP" => term = true,
            ".nf" => {
                out.push_str("\n```toml\n");
                preformatted = true;
            }
            _ => {
                let text = line.strip_prefix(".B ").unwrap_or(line);
                if term {
                    let text = roff_inline(text).replace('`', "");
                    out.push_str(&format!("\n### `{text}`\n\n"));
                    term = false;
                } else {
                    out.push_str(&roff_inline(text));
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn the_configuration_reference_is_made_from_the_man_page() {
    let path = root().join("docs/src/reference/configuration.md");
    let want = configuration_reference();
    if std::env::var_os("BKP_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()),
        "docs/src/reference/configuration.md is out of date with man/bkp.toml.5: run \
         `BKP_BLESS=1 cargo test --test docs` and commit it"
    );
}

/// `examples/alerts.yml` is a rules file Prometheus accepts, and its unit
/// tests (`examples/alerts.test.yml`) pass: each alert fires when it should and
/// not before. Needs promtool (Debian's `prometheus`, which scripts/bootstrap
/// installs); fails without it.
#[test]
fn the_shipped_alert_rules_load_and_fire_as_documented() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect(
            "promtool is missing: run scripts/bootstrap (Debian's `prometheus` package has it)",
        );
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(root().join("examples"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `bkp -h` ends with the exit codes: every code `src/exit.rs` names is there.
#[test]
fn the_help_lists_every_exit_code() {
    let help = bkp::cli::command().render_help().to_string();
    let codes = help
        .split_once("Exit codes:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no exit codes in `bkp -h`:\n{help}"));
    let exit = std::fs::read_to_string(root().join("src/exit.rs")).unwrap();
    let named: Vec<&str> = exit
        .lines()
        .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": i32 = "))
        .map(|(_, n)| n.trim_end_matches(';'))
        .collect();
    assert!(named.len() >= 14, "{named:?}");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|n| !codes.split(|c: char| !c.is_ascii_digit()).any(|w| w == **n))
        .collect();
    assert!(
        missing.is_empty(),
        "exit codes src/exit.rs names and `bkp -h` does not: {missing:?}"
    );
}

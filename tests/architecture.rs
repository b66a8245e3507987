//! The shape of `src/`, checked: no module cycle, no subcommand importing another
//! (only the shared `commands::run` and `commands::restore`), no domain module
//! reading the config file's format, and every file saying what it is for.
//!
//! The module graph is read from the `use crate::…`/`super::…` paths in each
//! file (tests and comments excluded), the way a reader would follow them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of the crate, `a::b` → its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The text of a module without its unit tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a module names: `crate::a::b`, `super::c`, and the items of
/// `crate::a::{b, c::d}` groups, each as a full path from the crate root.
fn named_paths(name: &str, text: &str) -> Vec<String> {
    let parent = name.rsplit_once("::").map_or("", |(p, _)| p);
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':').to_string();
            let join = |p: &str| {
                if base.is_empty() {
                    p.to_string()
                } else {
                    format!("{base}::{p}")
                }
            };
            if rest[path.len()..].trim_start_matches(':').starts_with('{') {
                let group_start = rest.find('{').unwrap();
                let group_end = rest[group_start..]
                    .find('}')
                    .map_or(rest.len(), |e| group_start + e);
                for item in rest[group_start + 1..group_end].split(',') {
                    let item: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let item = item.trim_end_matches(':');
                    match item {
                        "" => {}
                        "self" => out.push(join(&path)),
                        _ if path.is_empty() => out.push(join(item)),
                        _ => out.push(join(&format!("{path}::{item}"))),
                    }
                }
            } else if !path.is_empty() {
                out.push(join(&path));
            }
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve<'m>(mods: &'m BTreeMap<String, PathBuf>, path: &str) -> Option<&'m str> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|i| segs[..i].join("::"))
        .find_map(|c| mods.get_key_value(&c).map(|(k, _)| k.as_str()))
}

fn graph() -> (
    BTreeMap<String, PathBuf>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, path) in &mods {
        let set = edges.entry(name.clone()).or_default();
        for p in named_paths(name, &code(path)) {
            if let Some(t) = resolve(&mods, &p) {
                let inside = name.starts_with(&format!("{t}::"));
                if t != name && !inside && t != "lib" && t != "main" {
                    set.insert(t.to_string());
                }
            }
        }
    }
    (mods, edges)
}

/// The cycles of the graph (strongly connected parts of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on the reverse.
    fn visit(
        v: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(v.to_string()) {
            return;
        }
        for w in edges.get(v).into_iter().flatten() {
            visit(w, edges, seen, out);
        }
        out.push(v.to_string());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for v in edges.keys() {
        visit(v, edges, &mut seen, &mut order);
    }
    let mut reverse: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (v, ws) in edges {
        for w in ws {
            reverse.entry(w.clone()).or_default().insert(v.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        let mut comp = Vec::new();
        visit(v, &reverse, &mut seen, &mut comp);
        if comp.len() > 1 {
            comp.sort();
            out.push(comp);
        }
    }
    out
}

#[test]
fn no_module_cycle() {
    let (_, edges) = graph();
    let found = cycles(&edges);
    assert!(found.is_empty(), "module cycles in src/: {found:?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges.entry(a.into()).or_default().insert(b.into());
        edges.entry(b.into()).or_default();
    }
    assert_eq!(cycles(&edges), vec![vec!["a", "b", "c"]]);
}

#[test]
fn the_path_reader_follows_groups_and_super() {
    let text = "use crate::a::{b, c::d, self};\nuse super::{e, f::g};\nx(crate::h::i());";
    let mut got = named_paths("m::n", text);
    got.sort();
    assert_eq!(got, vec!["a", "a::b", "a::c::d", "h::i", "m::e", "m::f::g"]);
}

#[test]
fn no_subcommand_imports_another() {
    let (mods, edges) = graph();
    let shared =
        |t: &str| t == "commands" || t == "commands::run" || t.starts_with("commands::restore");
    let mut bad = Vec::new();
    for a in mods.keys().filter(|a| a.starts_with("commands::")) {
        for b in &edges[a] {
            let related = b.starts_with(&format!("{a}::")) || a.starts_with(&format!("{b}::"));
            if b.starts_with("commands::") && !shared(b) && !related {
                bad.push(format!("{a} -> {b}"));
            }
        }
    }
    assert!(bad.is_empty(), "subcommands importing each other: {bad:?}");
}

#[test]
fn domain_modules_never_read_the_config_format() {
    let (mods, edges) = graph();
    let outside = |m: &str| {
        m == "main" || m == "lib" || m == "cli" || m == "commands" || m.starts_with("commands::")
    };
    let bad: Vec<_> = mods
        .keys()
        .filter(|m| !outside(m) && *m != "config" && !m.starts_with("config::"))
        .filter(|m| {
            edges[*m]
                .iter()
                .any(|t| t == "config" || t.starts_with("config::"))
        })
        .collect();
    assert!(bad.is_empty(), "domain modules importing config: {bad:?}");
}

#[test]
fn every_file_says_what_it_is_for() {
    let (mods, _) = graph();
    let bad: Vec<_> = mods
        .iter()
        .filter(|(_, p)| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|(m, _)| m.clone())
        .collect();
    assert!(bad.is_empty(), "files without a //! line: {bad:?}");
}

/// The non-test code of every module outside `kinds/` whose `Kind` is the
/// kinds' (not one of its own, such as a key's or a log record's), by name.
fn outside_kinds() -> Vec<(String, String)> {
    let (mods, _) = graph();
    let own_kind = |text: &str| {
        text.contains("enum Kind")
            || text
                .lines()
                .any(|l| l.starts_with("use super::") && l.contains(" Kind,"))
    };
    mods.iter()
        .filter(|(m, _)| *m != "kinds" && !m.starts_with("kinds::"))
        .map(|(m, p)| (m.clone(), code(p)))
        .filter(|(_, text)| !own_kind(text))
        .collect()
}

/// The arms of a `match` on a kind in `text`: `Kind::Duckdb =>`,
/// `Kind::Duckdb |` or `Kind::Duckdb if`, one per variant named.
fn kind_arms(text: &str) -> usize {
    let mut n = 0;
    for (i, _) in text.match_indices("Kind::") {
        if text[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue; // `FileKind::`, `ErrorKind::`…
        }
        let rest = &text[i + "Kind::".len()..];
        let variant: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
        let after = rest[variant.len()..].trim_start();
        if variant.starts_with(char::is_uppercase)
            && variant != "ALL"
            && (after.starts_with("=>") || after.starts_with('|') || after.starts_with("if "))
        {
            n += 1;
        }
    }
    n
}

#[test]
fn the_kind_arm_counter_counts_arms_only() {
    let text = "match k { Kind::Duckdb | Kind::Pgdump => 1, Kind::Parquet if x => 2, _ => 3 }\nlet x = Kind::Duckdb;\nmatch e { ErrorKind::Other => 0, FileKind::Segment => 1 }";
    assert_eq!(kind_arms(text), 3);
}

/// What differs between sources is a descriptor's data or a kind's method:
/// outside `kinds/`, matches on a kind may only disappear. Each is a place a
/// new source must be taught by hand: `commands::code` (its code) and
/// `Plan::has_source` (its section) are the two meant for it; the others
/// are a kind's special case (TigerBeetle's log, a replication's newest set,
/// a DuckDB chain) that no other kind shares yet.
#[test]
fn matches_on_a_kind_outside_kinds_only_shrink() {
    let allowed: BTreeMap<&str, usize> = BTreeMap::from([
        // `commands::code`: each kind's code, one arm per kind.
        ("commands", 7),
        ("commands::restore", 3),
        ("commands::restore::reads", 4),
        // `Plan::has_source`: each kind's config section.
        ("config", 7),
        ("config::freshness", 2),
        ("lib", 3),
    ]);
    let mut bad = Vec::new();
    for (m, text) in outside_kinds() {
        let n = kind_arms(&text);
        let limit = allowed.get(m.as_str()).copied().unwrap_or(0);
        if n > limit {
            bad.push(format!("{m}: {n} arms (at most {limit})"));
        }
    }
    assert!(
        bad.is_empty(),
        "matches on a kind outside src/kinds/ (put what differs in the kind's descriptor, src/kinds/mod.rs): {bad:?}"
    );
}

/// A restore engine (a kind's, or the envelope and replay it runs) takes
/// narrow inputs: a source to read, a plan, a target. It never sees the
/// CLI's types or a run's context, so that `verify --drill`, `bkp snapshot
/// --from-log` and a future caller run it as `bkp restore` does. Only the
/// recipe (`commands::restore`) and its dry run and thaw request read the
/// command line.
#[test]
fn restore_engines_never_see_the_cli() {
    let (mods, edges) = graph();
    let recipe = [
        "commands::restore",
        "commands::restore::dry_run",
        "commands::restore::archived",
    ];
    let mut bad = Vec::new();
    for (m, p) in &mods {
        let engine = (m.starts_with("commands::restore::") || m.starts_with("kinds::"))
            && !recipe.contains(&m.as_str());
        if !engine {
            continue;
        }
        let text = code(p);
        for word in ["Ctx", "RestoreArgs", "crate::cli", "crate::commands"] {
            if text.contains(word) {
                bad.push(format!("{m} names {word}"));
            }
        }
        for used in edges.get(m).into_iter().flatten() {
            if used == "cli"
                || (used.starts_with("commands") && !used.starts_with("commands::restore"))
            {
                bad.push(format!("{m} uses {used}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "restore engines that see the command line: {bad:?}"
    );
}

/// The descriptor table is a leaf: the library modules below the kinds name
/// a kind through it without a cycle.
#[test]
fn the_kind_table_imports_nothing_of_bkp() {
    let (_, edges) = graph();
    let uses = edges.get("kinds").cloned().unwrap_or_default();
    assert!(uses.is_empty(), "src/kinds/mod.rs imports {uses:?}");
}

/// The functions of `text` with their length in lines (from `fn` to the
/// closing brace at the same indent).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let decl = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "async fn ",
            "pub async fn ",
        ]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p));
        let Some(decl) = decl else { continue };
        let name: String = decl
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            out.push((name, end + 2));
        }
    }
    out
}

#[test]
fn the_function_measure_counts_from_fn_to_its_brace() {
    let text = "fn a() {\n    x();\n}\n\n    pub fn b(\n        y: u8,\n    ) {\n    }\n";
    assert_eq!(
        function_lengths(text),
        vec![("a".to_string(), 3), ("b".to_string(), 4)]
    );
}

/// Functions over 120 lines (outside tests) may only shrink: the ones listed
/// are where a recipe still does a kind's or a library's work.
#[test]
fn long_functions_only_shrink() {
    let allowed: BTreeMap<&str, usize> = BTreeMap::from([
        ("chunks::write_file", 249),
        ("commands::cleanup::run", 204),
        ("commands::export::run", 264),
        ("commands::export::export_table", 189),
        ("commands::list::run", 149),
        ("commands::replicate::run", 197),
        ("commands::restore::duckdb::restore_database", 268),
        ("commands::restore::pgpitr::recover", 211),
        ("commands::snapshot::run", 140),
        ("commands::status::run", 184),
        ("commands::verify::look", 175),
        ("commands::verify::outcome::finish", 174),
        ("crypto::decrypt::new", 130),
        ("retention::plan", 147),
        ("sources::tigerbeetle::prepare", 132),
        ("tigerbeetle::tblog::replay::send_transfers", 134),
    ]);
    let (mods, _) = graph();
    let mut bad = Vec::new();
    for (m, p) in &mods {
        for (f, n) in function_lengths(&code(p)) {
            let key = format!("{m}::{f}");
            let limit = allowed.get(key.as_str()).copied().unwrap_or(120);
            if n > limit {
                bad.push(format!("{key}: {n} lines (at most {limit})"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "functions too long to read in one sitting: {bad:?}"
    );
}

/// The string literals of a file's code (tests and comments excluded), as
/// written between their quotes: normal strings and raw strings.
fn string_literals(text: &str) -> Vec<String> {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i..].find("*/").map_or(b.len(), |n| i + n + 2);
            }
            // A char literal ('"', '\'') or a lifetime ('a): skip the quote.
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i = text[i + 2..].find('\'').map_or(b.len(), |n| i + n + 3);
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = text[i + 1..].bytes().take_while(|c| *c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let close = format!("\"{}", "#".repeat(hashes));
                let end = text[start..].find(&close).map_or(b.len(), |n| start + n);
                out.push(text[start..end].to_string());
                i = end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                out.push(text[i + 1..j.min(b.len())].to_string());
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn the_literal_reader_finds_strings_only() {
    let text = "let a = \"one (s)\"; // \"not (s)\"\nlet c = '\"'; let d = r#\"raw \"x\" (s)\"#;\nlet e = \"esc \\\" q\"; /* \"no\" */ 'a: loop {}\n#[cfg(test)]\nmod tests { \"test (s)\" }";
    assert_eq!(
        string_literals(text),
        ["one (s)", "raw \"x\" (s)", "esc \\\" q"]
    );
}

/// Counts are written `1 file`, `2 files` ([`bkp::units::count`]), never
/// `file(s)`: no message of bkp's holds "(s)" (an `http(s)://` URL aside).
#[test]
fn no_message_says_file_s() {
    let mut bad = Vec::new();
    for (module, path) in modules(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))) {
        let text = std::fs::read_to_string(&path).unwrap();
        for s in string_literals(&text) {
            if s.replace("http(s)", "").contains("(s)") {
                bad.push(format!("{module}: {s:?}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "write counts with units::count (`1 file`, `2 files`), not `(s)`:\n{}",
        bad.join("\n")
    );
}

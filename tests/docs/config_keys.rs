//! Checks `man/bkp.toml.5` against the config the code accepts: the keys are
//! read from the `…File` structs (serde, `deny_unknown_fields`) under
//! `src/config/`, starting from `File`. Every one must be documented, and every
//! documented one must exist, both by that scan and by the config's own parser
//! (a file setting the key is not refused as unknown). The page names each key
//! on a `.B` line right after `.TP`; `GROUP` and `SCHEDULE` stand for the
//! retention groups and the schedules, which the kinds' descriptors define
//! (`bkp::kinds`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A struct (or a tagged enum, its variants' fields merged) with its fields as
/// `(name, type)`.
type Structs = BTreeMap<String, Vec<(String, String)>>;

/// The text between the `{` at `open` and its matching `}`.
fn body(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

/// The fields of a struct body, or of every variant of an enum body.
fn fields(body: &str, item: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line.starts_with("#[serde(")
            && ["rename", "alias", "flatten"]
                .iter()
                .any(|w| line.contains(w))
        {
            panic!("{item}: `{line}` is not understood by this scan: teach it tests/docs/config_keys.rs");
        }
        if line.starts_with("//") || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("pub ").unwrap_or(line);
        let Some((name, ty)) = line.split_once(':') else {
            continue;
        };
        if name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.push((
                name.to_string(),
                ty.trim().trim_end_matches(',').to_string(),
            ));
        }
    }
    out
}

/// Every serde struct and enum with `deny_unknown_fields` under `src/config/`.
fn structs(root: &Path) -> Structs {
    let mut out = Structs::new();
    for e in std::fs::read_dir(root.join("src/config")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for (at, _) in text.match_indices("deny_unknown_fields") {
            let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
            if !text[line_start..at].trim_start().starts_with("#[serde(") {
                continue;
            }
            let rest = &text[at..];
            let decl = rest
                .find("pub struct ")
                .into_iter()
                .chain(rest.find("pub enum "))
                .min()
                .expect("deny_unknown_fields without a struct");
            let header = &rest[decl..];
            let name: String = header
                .split_whitespace()
                .nth(2)
                .unwrap()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let open = at + decl + header.find('{').unwrap();
            let mut f = fields(body(&text, open), &name);
            if header.starts_with("pub enum") {
                let attr = &rest[..decl];
                let tag = attr
                    .split("tag = \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .expect("an enum in the config must be internally tagged");
                f.push((tag.to_string(), "String".into()));
            }
            out.insert(name, f);
        }
    }
    // The retention groups and the schedules are the kinds' (`bkp::kinds`):
    // `[retention]` and `[freshness.rpo]`/`[freshness.every]` are maps the
    // config checks against those lists.
    let mut retention = vec![("grace".to_string(), "Option<String>".to_string())];
    retention.extend(bkp::kinds::groups().map(|(_, g)| (g.name.to_string(), "PolicyFile".into())));
    out.insert("RetentionFile".into(), retention);
    let per_schedule = bkp::kinds::schedules()
        .map(|s| (s.as_str().replace('-', "_"), "Option<String>".to_string()))
        .collect();
    out.insert("PerSchedule".into(), per_schedule);
    out
}

/// The struct a field's type names, if it is one of `structs`.
fn nested<'a>(ty: &str, structs: &'a Structs) -> Option<&'a str> {
    ty.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .find_map(|w| structs.get_key_value(w).map(|(k, _)| k.as_str()))
}

fn keys(of: &str, prefix: &str, structs: &Structs, out: &mut BTreeSet<String>) {
    for (name, ty) in &structs[of] {
        let key = format!("{prefix}{name}");
        match nested(ty, structs) {
            Some(inner) => keys(inner, &format!("{key}."), structs, out),
            None => {
                out.insert(key);
            }
        }
    }
}

/// Every key the config accepts, dotted (`encryption.old_keys.key_id` for a
/// key of an array of tables).
pub fn accepted(root: &Path) -> BTreeSet<String> {
    let structs = structs(root);
    let mut out = BTreeSet::new();
    keys("File", "", &structs, &mut out);
    out
}

/// The names a placeholder of the page stands for, from the source.
fn placeholders(root: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let s = structs(root);
    let of = |owner: &str, ty: &str| -> Vec<String> {
        s[owner]
            .iter()
            .filter(|(_, t)| t.contains(ty))
            .map(|(n, _)| n.clone())
            .collect()
    };
    BTreeMap::from([
        ("GROUP", of("RetentionFile", "PolicyFile")),
        ("SCHEDULE", of("PerSchedule", "String")),
    ])
}

/// The keys `man/bkp.toml.5` documents, placeholders expanded.
pub fn documented(root: &Path) -> BTreeSet<String> {
    let page = std::fs::read_to_string(root.join("man/bkp.toml.5")).unwrap();
    let names = placeholders(root);
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = page.lines().collect();
    for pair in lines.windows(2) {
        let (".TP", Some(key)) = (pair[0], pair[1].strip_prefix(".B ")) else {
            continue;
        };
        let mut keys = vec![key.trim().trim_matches('"').to_string()];
        for (ph, values) in &names {
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    if k.split('.').any(|part| part == *ph) {
                        values
                            .iter()
                            .map(|v| {
                                k.split('.')
                                    .map(|p| if p == *ph { v.as_str() } else { p })
                                    .collect::<Vec<_>>()
                                    .join(".")
                            })
                            .collect()
                    } else {
                        vec![k]
                    }
                })
                .collect();
        }
        out.extend(keys);
    }
    out
}

/// Whether the config's own parser knows `key`: a file setting only that key
/// (inside its table, or an array of tables for `encryption.old_keys`) may
/// fail for a missing or mistyped value, but not for an unknown field. The
/// store is tried as each of its types.
fn parser_knows(key: &str) -> bool {
    let (table, leaf) = match key.rsplit_once('.') {
        None => return !unknown_field(&format!("{key} = 1\n")),
        Some(split) => split,
    };
    let header = if table == "encryption.old_keys" {
        format!("[[{table}]]")
    } else {
        format!("[{table}]")
    };
    let tags: &[&str] = match (table, leaf) {
        ("store", "type") => &[""],
        ("store", _) => &["type = \"local\"\n", "type = \"s3\"\n"],
        _ => &[""],
    };
    tags.iter()
        .any(|tag| !unknown_field(&format!("{header}\n{tag}{leaf} = 1\n")))
}

fn unknown_field(toml_text: &str) -> bool {
    match toml::from_str::<bkp::config::File>(toml_text) {
        Ok(_) => false,
        Err(e) => e.to_string().contains("unknown field"),
    }
}

pub fn check(root: &Path) {
    // The parser check itself tells a known key from an unknown one.
    assert!(parser_knows("store.bucket") && parser_knows("encryption.old_keys.key_id"));
    assert!(!parser_knows("store.buckets") && !parser_knows("retention.logs.keep_lost"));

    let accepted = accepted(root);
    // The scan sees what it must: nested sections, an enum's tag and variants,
    // an array of tables, a struct used at several places.
    for k in [
        "work_dir",
        "store.type",
        "store.path",
        "store.bucket",
        "encryption.old_keys.key_id",
        "retention.logs.keep_log_window",
        "freshness.every.export_full",
    ] {
        assert!(
            accepted.contains(k),
            "the source scan missed {k}: {accepted:?}"
        );
    }
    let documented = documented(root);
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty(),
        "keys the config accepts but man/bkp.toml.5 does not document: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys man/bkp.toml.5 documents but the config does not accept: {unknown:?}"
    );
    let refused: Vec<_> = documented.iter().filter(|k| !parser_knows(k)).collect();
    assert!(
        refused.is_empty(),
        "keys man/bkp.toml.5 documents but the config parser refuses as unknown: {refused:?}"
    );
}

//! Path globs for `replicate.include` / `exclude`: `*` and `?` within one path
//! segment, `**` across segments (`**/*.parquet` matches at any depth).

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    segments: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob> {
        if pattern.is_empty() || pattern.starts_with('/') {
            bail!("{pattern:?}: a glob is a relative path such as \"**/*.parquet\"");
        }
        if pattern.contains(['[', ']', '{', '}']) {
            bail!("{pattern:?}: only *, ? and ** are supported");
        }
        Ok(Glob {
            segments: pattern.split('/').map(str::to_string).collect(),
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        match_segments(&self.segments, &parts)
    }

    /// Whether some path below the directory `dir` could match.
    pub fn may_match_below(&self, dir: &str) -> bool {
        let parts: Vec<&str> = dir.split('/').collect();
        may_match_below(&self.segments, &parts)
    }

    /// Whether every path below the directory `dir` matches (`tmp/**` for
    /// `tmp/x`).
    pub fn matches_all_below(&self, dir: &str) -> bool {
        let parts: Vec<&str> = dir.split('/').collect();
        match self.segments.split_last() {
            Some((last, head)) if last == "**" => {
                (0..=parts.len()).any(|k| match_segments(head, &parts[..k]))
            }
            _ => false,
        }
    }
}

/// Whether `pat` could match `dir` followed by at least one more segment.
fn may_match_below(pat: &[String], dir: &[&str]) -> bool {
    match (pat.split_first(), dir.split_first()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some((p, _)), Some(_)) if p == "**" => true,
        (Some((p, rest)), Some((d, more))) => {
            match_one(p.as_bytes(), d.as_bytes()) && may_match_below(rest, more)
        }
    }
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((s, more)) => match_one(p.as_bytes(), s.as_bytes()) && match_segments(rest, more),
            None => false,
        },
    }
}

fn match_one(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_one(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_one(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_one(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn globs_match_like_a_shell_with_double_star() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("**/*.parquet").matches("a.parquet"));
        assert!(g("**/*.parquet").matches("x/y/a.parquet"));
        assert!(!g("**/*.parquet").matches("x/a.parquet.tmp"));
        assert!(g("*.parquet").matches("a.parquet"));
        assert!(!g("*.parquet").matches("d/a.parquet"));
        assert!(g("tmp/**").matches("tmp/a/b"));
        assert!(g("y=202?/**").matches("y=2026/m=1/p.parquet"));
        assert!(!g("y=202?/**").matches("y=20261/p.parquet"));
        assert!(Glob::new("/abs").is_err() && Glob::new("[ab]").is_err());
    }

    #[test]
    fn directories_are_judged_by_what_could_lie_below() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("**/*.parquet").may_match_below("a/b"));
        assert!(g("y=202?/*.parquet").may_match_below("y=2026"));
        assert!(!g("y=202?/*.parquet").may_match_below("y=2026/m=1"));
        assert!(!g("y=202?/*.parquet").may_match_below("lost+found"));
        assert!(!g("*.parquet").may_match_below("d"));
        assert!(g("tmp/**").matches_all_below("tmp"));
        assert!(g("tmp/**").matches_all_below("tmp/a"));
        assert!(!g("tmp/**").matches_all_below("tmpx"));
        assert!(g("**").matches_all_below("x"));
        assert!(!g("tmp/*").matches_all_below("tmp"));
    }
}

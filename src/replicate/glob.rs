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
}

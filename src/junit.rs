//! JUnit XML test reports, the format CI systems (GitHub Actions, GitLab CI,
//! Jenkins) show as test results: suites of named test cases, each passed,
//! failed, skipped or in error, with a message. Text is escaped for XML 1.0;
//! characters XML cannot carry at all become U+FFFD.

use std::fmt::Write as _;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How one test case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(String),
    Skipped(String),
    /// The check could not run (JUnit's `error`).
    Error(String),
}

/// One test case.
#[derive(Debug, Clone)]
pub struct Case {
    pub classname: String,
    pub name: String,
    pub verdict: Verdict,
    /// Facts worth showing beside the result (`system-out`).
    pub out: Option<String>,
}

/// A named group of cases.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
}

/// Escapes `s` for XML 1.0 text and attribute values. Line breaks and tabs
/// become character references, so attribute values keep them.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            // Not allowed in XML 1.0, not even as a character reference.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The XML document of `suites`, named `name`.
pub fn render(name: &str, at: OffsetDateTime, seconds: f64, suites: &[Suite]) -> String {
    let all = || suites.iter().flat_map(|s| &s.cases);
    fn count<'a>(f: fn(&Verdict) -> bool, cases: impl Iterator<Item = &'a Case>) -> usize {
        cases.filter(|c| f(&c.verdict)).count()
    }
    let failed = |v: &Verdict| matches!(v, Verdict::Failed(_));
    let skipped = |v: &Verdict| matches!(v, Verdict::Skipped(_));
    let errored = |v: &Verdict| matches!(v, Verdict::Error(_));
    let timestamp = at.format(&Rfc3339).unwrap_or_default();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{seconds:.3}\" timestamp=\"{timestamp}\">",
        escape(name),
        all().count(),
        count(failed, all()),
        count(errored, all()),
        count(skipped, all()),
    );
    for s in suites {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" timestamp=\"{timestamp}\">",
            escape(&s.name),
            s.cases.len(),
            count(failed, s.cases.iter()),
            count(errored, s.cases.iter()),
            count(skipped, s.cases.iter()),
        );
        for c in &s.cases {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&c.classname),
                escape(&c.name)
            );
            let body = match &c.verdict {
                Verdict::Passed => None,
                Verdict::Failed(m) => Some(format!(
                    "<failure message=\"{0}\" type=\"failure\">{0}</failure>",
                    escape(m)
                )),
                Verdict::Error(m) => Some(format!(
                    "<error message=\"{0}\" type=\"error\">{0}</error>",
                    escape(m)
                )),
                Verdict::Skipped(m) => Some(format!("<skipped message=\"{}\"/>", escape(m))),
            };
            let out = c
                .out
                .as_ref()
                .map(|o| format!("<system-out>{}</system-out>", escape(o)));
            if body.is_none() && out.is_none() {
                x.push_str("/>\n");
                continue;
            }
            x.push_str(">\n");
            for part in body.iter().chain(out.iter()) {
                let _ = writeln!(x, "      {part}");
            }
            x.push_str("    </testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// A name for a case from a message: its first line, at most 100 characters.
pub fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    match line.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_no_forbidden_character() {
        let nasty = "a<b>&\"c'\n\td\u{0}\u{1b}[31m\u{FFFF}é✓";
        let e = escape(nasty);
        assert_eq!(
            e,
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;&#9;d\u{FFFD}\u{FFFD}[31m\u{FFFD}é✓"
        );
        assert!(!e.contains(['<', '>', '"', '\'']));
        assert!(!e.chars().any(|c| (c as u32) < 0x20));
    }

    #[test]
    fn a_report_counts_its_cases_and_escapes_every_field() {
        let at = time::macros::datetime!(2026-11-23 12:00 UTC);
        let case = |name: &str, verdict| Case {
            classname: "bkp.verify.object".into(),
            name: name.into(),
            verdict,
            out: None,
        };
        let suites = [Suite {
            name: "objects <&>".into(),
            cases: vec![
                case("ok", Verdict::Passed),
                case(
                    "k<1>",
                    Verdict::Failed("object \"k<1>\" is missing & gone".into()),
                ),
                case("k2", Verdict::Skipped("no ledger".into())),
                case("k3", Verdict::Error("store\nunreachable".into())),
            ],
        }];
        let x = render("bkp verify", at, 1.5, &suites);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert!(x.contains(
            "<testsuites name=\"bkp verify\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\" time=\"1.500\""
        ));
        assert!(x.contains("<testsuite name=\"objects &lt;&amp;&gt;\" tests=\"4\""));
        assert!(x.contains("<testcase classname=\"bkp.verify.object\" name=\"ok\"/>"));
        assert!(x.contains(
            "<failure message=\"object &quot;k&lt;1&gt;&quot; is missing &amp; gone\" type=\"failure\">"
        ));
        assert!(x.contains("<error message=\"store&#10;unreachable\""));
        assert!(x.contains("<skipped message=\"no ledger\"/>"));
        // Every element that opens closes: the tags balance.
        for tag in ["testsuites", "testsuite", "failure", "error"] {
            let opened = x.matches(&format!("<{tag} ")).count();
            let closed = x.matches(&format!("</{tag}>")).count();
            assert_eq!(opened, closed, "{tag} in\n{x}");
        }
    }

    #[test]
    fn a_long_message_makes_a_short_name() {
        let long = format!("{}\nsecond line", "x".repeat(300));
        let s = short(&long);
        assert_eq!(s.chars().count(), 101);
        assert!(!s.contains('\n'));
        assert_eq!(short("one"), "one");
    }
}

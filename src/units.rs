//! Human-friendly sizes, durations and times in config files and flags: `16MiB`,
//! `15m`, `--since 7d`.

use std::time::Duration;

use anyhow::{bail, Result};

/// Parses `1048576`, `64KiB`, `16MiB`, `1GiB`, `10MB`, `512B`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        anyhow::anyhow!("{s:?} is not a size (examples: 1048576, 64KiB, 16MiB, 1GiB)")
    })?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => bail!("{s:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"),
    };
    n.checked_mul(mul)
        .ok_or_else(|| anyhow::anyhow!("{s:?} is too large"))
}

/// `1 file`, `2 files`, `0 files`: a count and its noun, singular or plural
/// (`noun` + "s"; a noun in -y takes -ies).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// Parses `500ms`, `30s`, `15m`, `6h`, `7d`, or a combination like `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    if t.is_empty() {
        bail!("empty duration (examples: 30s, 15m, 6h, 7d)");
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            bail!("{s:?} is not a duration (examples: 30s, 15m, 6h, 7d, 1h30m)");
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| anyhow::anyhow!("{s:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = |mul: u64| {
            n.checked_mul(mul)
                .map(Duration::from_secs)
                .ok_or_else(|| anyhow::anyhow!("{s:?} is too large"))
        };
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => secs(1)?,
            "m" => secs(60)?,
            "h" => secs(3600)?,
            "d" => secs(86_400)?,
            "" => bail!("{s:?}: a duration needs a unit (ms, s, m, h or d)"),
            other => bail!("{s:?}: unknown duration unit {other:?} (use ms, s, m, h or d)"),
        };
        total = total
            .checked_add(d)
            .ok_or_else(|| anyhow::anyhow!("{s:?} is too large"))?;
    }
    if total > MAX_DURATION {
        bail!("{s:?} is too large (at most 100 years)");
    }
    Ok(total)
}

/// A `--since` value: an RFC 3339 time, or a duration back from `now` (`7d`).
pub fn parse_since(
    flag: &str,
    s: &str,
    now: time::OffsetDateTime,
) -> anyhow::Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let d = parse_duration(s).map_err(|_| {
        crate::exit::coded(
            crate::exit::Code::Config,
            format!("{flag} {s:?} is neither an RFC 3339 time (2026-11-22T06:00:00Z) nor a duration (7d)"),
        )
    })?;
    Ok(time::Duration::try_from(d)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
}

/// The longest duration accepted anywhere, so that `now + duration` never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `now + d`, saturating far in the future instead of overflowing.
pub fn deadline(d: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(d.min(MAX_DURATION))
        .unwrap_or(now + Duration::from_secs(86_400))
}

/// An instant as bkp's lines and documents write it: RFC 3339, in UTC
/// (`2026-11-26T16:00:10.777729877Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(2, "transfer"), "2 transfers");
        assert_eq!(count(3, "expiry"), "3 expiries");
        assert_eq!(count(1, "expiry"), "1 expiry");
    }

    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now = time::macros::datetime!(2026-11-23 12:00 UTC);
        assert_eq!(
            parse_since("--since", "2026-11-22T06:00:00Z", now).unwrap(),
            time::macros::datetime!(2026-11-22 06:00 UTC)
        );
        assert_eq!(
            parse_since("--since", "36h", now).unwrap(),
            time::macros::datetime!(2026-11-22 00:00 UTC)
        );
        let e = parse_since("--since", "yesterday", now).unwrap_err();
        assert!(format!("{e}").contains("--since \"yesterday\""), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        for bad in ["", "MiB", "12 parsecs", "-1", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in [
            "",
            "5",
            "h",
            "3 weeks",
            "1y",
            "300000000000000d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

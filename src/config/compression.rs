//! The `[compression]` section: the algorithm and level backups are compressed
//! with (default zstd level 3 on every core).

use anyhow::Result;
use serde::Deserialize;

use super::Validator;
use crate::stages::compress::Compression;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionFile {
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    pub level: Option<i32>,
    /// zstd worker threads; 0 (the default) means one per core.
    pub threads: Option<u32>,
}

fn default_algorithm() -> String {
    "zstd".into()
}

impl Default for CompressionFile {
    fn default() -> Self {
        CompressionFile {
            algorithm: default_algorithm(),
            level: None,
            threads: None,
        }
    }
}

pub(super) fn validate(c: CompressionFile, v: &Validator) -> Result<Compression> {
    Ok(match c.algorithm.as_str() {
        "none" => Compression::None,
        "gzip" => {
            let level = v.within(
                "compression.level",
                c.level.unwrap_or(6),
                0..=9,
                "gzip levels are 0 to 9",
            )?;
            Compression::Gzip {
                level: level as u32,
            }
        }
        "zstd" => {
            let level = v.within(
                "compression.level",
                c.level.unwrap_or(3),
                1..=19,
                "zstd levels are 1 to 19",
            )?;
            let threads = match c.threads.unwrap_or(0) {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                n => n,
            };
            Compression::Zstd { level, threads }
        }
        other => {
            return Err(v.not_one_of(
                "compression.algorithm",
                other,
                &["zstd", "gzip", "none"],
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fails_naming, with};
    use super::*;

    #[test]
    fn algorithms_and_levels() {
        let c = |extra: &str| with(&format!("[compression]\n{extra}")).unwrap().compression;
        assert!(matches!(c(""), Compression::Zstd { level: 3, .. }));
        assert!(matches!(
            c("level = 19\nthreads = 2\n"),
            Compression::Zstd {
                level: 19,
                threads: 2
            }
        ));
        assert_eq!(
            c("algorithm = \"gzip\"\n"),
            Compression::Gzip { level: 6 }
        );
        assert_eq!(c("algorithm = \"none\"\n"), Compression::None);
        for (extra, needle) in [
            ("algorithm = \"lz4\"\n", "compression.algorithm: \"lz4\" is not one of"),
            ("level = 40\n", "compression.level: zstd levels are 1 to 19"),
            ("algorithm = \"gzip\"\nlevel = 10\n", "gzip levels are 0 to 9"),
        ] {
            fails_naming(&format!("{}[compression]\n{extra}", super::super::tests::MINIMAL), needle);
        }
    }
}

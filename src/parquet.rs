//! Checks that bytes are a whole Parquet file before they are replicated.
//!
//! A Parquet file is `PAR1 ‖ data ‖ footer ‖ footer length (u32 LE) ‖ PAR1`,
//! where the footer is a Thrift compact-protocol `FileMetaData` struct. A file
//! that was truncated, overwritten in the middle of a write or is not Parquet at
//! all fails one of: the magic at either end, a footer length that fits, or a
//! footer that parses to its exact length with the required fields present.
//!
//! The check needs only the first four bytes and the tail of the file, so it works
//! the same on a local file (two seeks) and on an S3 object (one suffix range
//! read), without reading the data pages. A generic Thrift walker is enough: it
//! checks the structure of every nested field without knowing Parquet's schema
//! beyond the top-level `FileMetaData` fields it reports.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub const MAGIC: &[u8; 4] = b"PAR1";
/// The smallest file: magic, an (empty) footer length and magic again.
pub const MIN_LEN: u64 = 12;
/// A footer this large is almost certainly corruption (Parquet writers keep it
/// to kilobytes or a few megabytes).
const MAX_FOOTER: u64 = 256 << 20;
/// Thrift nesting deeper than this is refused rather than followed.
const MAX_DEPTH: usize = 64;

/// What the footer says about a valid file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParquetFacts {
    pub version: i32,
    pub num_rows: i64,
    pub row_groups: u64,
    /// Schema elements, the root included.
    pub schema_elements: u64,
    pub footer_len: u32,
}

/// How many bytes of the file's tail [`footer_len`] needs first.
pub const TAIL_PROBE: u64 = 8;

/// Reads the footer length from the last eight bytes, checking the end magic.
pub fn footer_len(last8: &[u8], file_len: u64) -> Result<u32> {
    if file_len < MIN_LEN {
        bail!("{file_len} bytes is too short for a Parquet file (at least {MIN_LEN})");
    }
    if last8.len() != 8 {
        bail!("internal: expected the last 8 bytes, got {}", last8.len());
    }
    if &last8[4..] != MAGIC {
        if &last8[4..] == b"PARE" {
            bail!("the file uses Parquet modular encryption (footer magic PARE), which bkp cannot check");
        }
        bail!("no PAR1 magic at the end (truncated, or not a Parquet file)");
    }
    let n = u32::from_le_bytes([last8[0], last8[1], last8[2], last8[3]]);
    if u64::from(n) > file_len - MIN_LEN || u64::from(n) > MAX_FOOTER {
        bail!("footer length {n} does not fit in a {file_len}-byte file (truncated?)");
    }
    Ok(n)
}

/// Checks a whole file from its first four bytes and its last `footer_len + 8`
/// bytes (`tail`), the file being `file_len` bytes long.
pub fn check_parts(head: &[u8], tail: &[u8], file_len: u64) -> Result<ParquetFacts> {
    if head.len() < 4 || &head[..4] != MAGIC {
        bail!("no PAR1 magic at the start (not a Parquet file)");
    }
    if tail.len() < 8 {
        bail!("internal: tail shorter than 8 bytes");
    }
    let n = footer_len(&tail[tail.len() - 8..], file_len)? as usize;
    if tail.len() < n + 8 {
        bail!(
            "internal: tail holds {} bytes, the footer needs {}",
            tail.len(),
            n + 8
        );
    }
    let footer = &tail[tail.len() - 8 - n..tail.len() - 8];
    parse_footer(footer).context("the footer (FileMetaData) does not parse")
}

/// Checks a complete file held in memory.
pub fn check_bytes(bytes: &[u8]) -> Result<ParquetFacts> {
    let len = bytes.len() as u64;
    if len < MIN_LEN {
        bail!("{len} bytes is too short for a Parquet file (at least {MIN_LEN})");
    }
    check_parts(&bytes[..4], bytes, len)
}

/// Validates a local Parquet file: magic at both ends and a footer that parses.
/// Reads only the head and the footer.
pub fn check_parquet(path: &Path) -> Result<ParquetFacts> {
    let what = || format!("{} is not a valid Parquet file", path.display());
    let mut f = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("failed to stat {}", path.display()))?
        .len();
    if len < MIN_LEN {
        return Err(anyhow::anyhow!(
            "{len} bytes is too short for a Parquet file (at least {MIN_LEN})"
        ))
        .with_context(what);
    }
    let mut head = [0u8; 4];
    f.read_exact(&mut head)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut last8 = [0u8; 8];
    f.seek(SeekFrom::End(-8))
        .and_then(|_| f.read_exact(&mut last8))
        .with_context(|| format!("failed to read {}", path.display()))?;
    let n = footer_len(&last8, len).with_context(what)?;
    let mut tail = vec![0u8; n as usize + 8];
    f.seek(SeekFrom::End(-(i64::from(n) + 8)))
        .and_then(|_| f.read_exact(&mut tail))
        .with_context(|| format!("failed to read {}", path.display()))?;
    check_parts(&head, &tail, len).with_context(what)
}

/// Reads every row of a local Parquet file with DuckDB and checks the count
/// against the footer: proof that the data pages decode, not only the footer
/// (for restore drills). Returns the row count.
pub fn load_check(path: &Path) -> Result<i64> {
    let facts = check_parquet(path)?;
    let db = duckdb::Connection::open_in_memory().context("failed to start DuckDB")?;
    let quoted = path.display().to_string().replace('\'', "''");
    // Aggregating a hash of every whole row makes DuckDB decode every page.
    let rows: i64 = db
        .query_row(
            &format!("SELECT count(*), bit_xor(hash(t)) FROM read_parquet('{quoted}') AS t"),
            [],
            |r| r.get(0),
        )
        .with_context(|| format!("DuckDB cannot read {}", path.display()))?;
    if rows != facts.num_rows {
        bail!(
            "{}: DuckDB read {rows} rows, the footer says {}",
            path.display(),
            facts.num_rows
        );
    }
    Ok(rows)
}

/// Parses a `FileMetaData` footer, requiring it to end exactly where it should.
pub fn parse_footer(footer: &[u8]) -> Result<ParquetFacts> {
    let mut r = Thrift { b: footer, pos: 0 };
    let mut facts = ParquetFacts {
        version: 0,
        num_rows: -1,
        row_groups: 0,
        schema_elements: 0,
        footer_len: footer.len() as u32,
    };
    let (mut has_version, mut has_schema, mut has_rows, mut has_groups) =
        (false, false, false, false);
    let mut last_id: i16 = 0;
    loop {
        let Some((id, ty)) = r.field_header(&mut last_id)? else {
            break;
        };
        match (id, ty) {
            (1, T_I32) => {
                facts.version = r.varint()?.try_into().map(zigzag32)?;
                has_version = true;
            }
            (2, T_LIST) => {
                let (n, et) = r.list_header()?;
                if et != T_STRUCT {
                    bail!("schema is not a list of structs");
                }
                for _ in 0..n {
                    r.skip(T_STRUCT, 1)?;
                }
                facts.schema_elements = n;
                has_schema = true;
            }
            (3, T_I64) => {
                facts.num_rows = zigzag64(r.varint()?);
                has_rows = true;
            }
            (4, T_LIST) => {
                let (n, et) = r.list_header()?;
                if et != T_STRUCT {
                    bail!("row_groups is not a list of structs");
                }
                for _ in 0..n {
                    r.skip(T_STRUCT, 1)?;
                }
                facts.row_groups = n;
                has_groups = true;
            }
            (1..=4, _) => bail!("field {id} has the wrong type ({ty})"),
            _ => r.skip(ty, 1)?,
        }
    }
    if r.pos != footer.len() {
        bail!(
            "the footer ends after {} of its {} bytes",
            r.pos,
            footer.len()
        );
    }
    if !(has_version && has_schema && has_rows && has_groups) {
        bail!("required fields are missing (version, schema, num_rows, row_groups)");
    }
    if facts.schema_elements == 0 {
        bail!("the schema is empty");
    }
    if facts.num_rows < 0 {
        bail!("negative row count {}", facts.num_rows);
    }
    Ok(facts)
}

const T_TRUE: u8 = 1;
const T_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I16: u8 = 4;
const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_DOUBLE: u8 = 7;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_SET: u8 = 10;
const T_MAP: u8 = 11;
const T_STRUCT: u8 = 12;

fn zigzag64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn zigzag32(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

/// A bounds-checked reader of the Thrift compact protocol.
struct Thrift<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Thrift<'_> {
    fn byte(&mut self) -> Result<u8> {
        let Some(&b) = self.b.get(self.pos) else {
            bail!("unexpected end at byte {}", self.pos);
        };
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<()> {
        let end = (self.pos as u64).saturating_add(n);
        if end > self.b.len() as u64 {
            bail!("a {n}-byte value at byte {} runs past the end", self.pos);
        }
        self.pos = end as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                bail!("varint overflow at byte {}", self.pos);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long at byte {}", self.pos)
    }

    /// The next field's id and type, or `None` at the struct's end.
    fn field_header(&mut self, last_id: &mut i16) -> Result<Option<(i16, u8)>> {
        let h = self.byte()?;
        if h == 0 {
            return Ok(None);
        }
        let ty = h & 0x0f;
        let delta = h >> 4;
        let id = if delta == 0 {
            let raw = self.varint()?;
            let z = zigzag64(raw);
            i16::try_from(z).map_err(|_| anyhow::anyhow!("field id {z} out of range"))?
        } else {
            last_id.saturating_add(i16::from(delta))
        };
        *last_id = id;
        Ok(Some((id, ty)))
    }

    fn list_header(&mut self) -> Result<(u64, u8)> {
        let h = self.byte()?;
        let n = match h >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        // Every element takes at least one byte: a count beyond the bytes left is
        // corruption, and must not drive a long loop.
        if n > (self.b.len() - self.pos) as u64 {
            bail!("a list of {n} elements cannot fit in the footer");
        }
        Ok((n, h & 0x0f))
    }

    fn skip(&mut self, ty: u8, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!("nesting deeper than {MAX_DEPTH}");
        }
        match ty {
            T_TRUE | T_FALSE => Ok(()),
            T_BYTE => self.take(1),
            T_I16 | T_I32 | T_I64 => self.varint().map(|_| ()),
            T_DOUBLE => self.take(8),
            T_BINARY => {
                let n = self.varint()?;
                self.take(n)
            }
            T_LIST | T_SET => {
                let (n, et) = self.list_header()?;
                for _ in 0..n {
                    // Booleans inside lists take one byte each.
                    if et == T_TRUE || et == T_FALSE {
                        self.take(1)?;
                    } else {
                        self.skip(et, depth + 1)?;
                    }
                }
                Ok(())
            }
            T_MAP => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                if n > (self.b.len() - self.pos) as u64 {
                    bail!("a map of {n} entries cannot fit in the footer");
                }
                let kv = self.byte()?;
                for _ in 0..n {
                    for t in [kv >> 4, kv & 0x0f] {
                        if t == T_TRUE || t == T_FALSE {
                            self.take(1)?;
                        } else {
                            self.skip(t, depth + 1)?;
                        }
                    }
                }
                Ok(())
            }
            T_STRUCT => {
                let mut last = 0i16;
                while let Some((_, t)) = self.field_header(&mut last)? {
                    self.skip(t, depth + 1)?;
                }
                Ok(())
            }
            other => bail!("unknown Thrift type {other} at byte {}", self.pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real file written by DuckDB.
    fn sample(dir: &Path, rows: u32) -> std::path::PathBuf {
        let p = dir.join("t.parquet");
        let db = duckdb::Connection::open_in_memory().unwrap();
        db.execute_batch(&format!(
            "COPY (SELECT i, 'row ' || i AS s, i * 0.5 AS d FROM range({rows}) t(i)) TO '{}' (FORMAT parquet)",
            p.display()
        ))
        .unwrap();
        p
    }

    #[test]
    fn a_duckdb_file_passes_and_reports_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path(), 1234);
        let facts = check_parquet(&p).unwrap();
        assert_eq!(facts.num_rows, 1234);
        assert_eq!(facts.schema_elements, 4);
        assert!(facts.row_groups >= 1);
        assert_eq!(check_bytes(&std::fs::read(&p).unwrap()).unwrap(), facts);
        assert_eq!(load_check(&p).unwrap(), 1234);
    }

    #[test]
    fn truncation_and_damage_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(sample(dir.path(), 100)).unwrap();
        for cut in [0, 3, 11, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(check_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Magic at both ends but the footer cut short: the length no longer fits
        // or the footer no longer parses.
        let n = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
        let mut short = bytes.clone();
        let at = short.len() - 8 - n as usize / 2;
        short.drain(at..short.len() - 8);
        assert!(check_bytes(&short).is_err());
        // A damaged footer byte (a field header turned into an unknown type).
        let mut bad = bytes.clone();
        let f0 = bad.len() - 8 - n as usize;
        bad[f0] = 0x1d;
        let err = check_bytes(&bad).unwrap_err();
        assert!(format!("{err:#}").contains("footer"), "{err:#}");
        // Not Parquet at all.
        assert!(check_bytes(b"hello, this is not parquet").is_err());
        let mut head = bytes.clone();
        head[0] = b'X';
        assert!(format!("{:#}", check_bytes(&head).unwrap_err()).contains("start"));
    }

    #[test]
    fn a_damaged_data_page_passes_the_footer_check_but_not_the_load_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path(), 5000);
        let mut bytes = std::fs::read(&p).unwrap();
        for b in &mut bytes[8..2000] {
            *b ^= 0x5a;
        }
        std::fs::write(&p, &bytes).unwrap();
        assert!(check_parquet(&p).is_ok());
        assert!(load_check(&p).is_err());
    }

    #[test]
    fn the_file_check_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.parquet");
        let bytes = std::fs::read(sample(dir.path(), 10)).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let err = format!("{:#}", check_parquet(&p).unwrap_err());
        assert!(err.contains("cut.parquet") && err.contains("PAR1"), "{err}");
    }
}

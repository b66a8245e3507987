//! Writes a tree of small Parquet files with DuckDB, for the replicate benchmark:
//! `cargo run --example make_parquet -- DIR COUNT [ROWS [CODEC]]` (CODEC: zstd,
//! as bkp's exports write, or snappy, DuckDB's default). File `i` goes to
//! `DIR/day=NN/part-IIII.parquet`; its contents depend on `i`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: make_parquet DIR COUNT [ROWS [CODEC]]";
    let dir = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);
    let count: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let rows: u64 = args.next().map_or(Ok(2000), |r| r.parse())?;
    let codec = args.next().unwrap_or_else(|| "zstd".into());
    if !["zstd", "snappy", "uncompressed"].contains(&codec.as_str()) {
        anyhow::bail!("{usage}: CODEC is zstd, snappy or uncompressed");
    }
    let db = duckdb::Connection::open_in_memory()?;
    for i in 0..count {
        let sub = dir.join(format!("day={:02}", i % 30));
        std::fs::create_dir_all(&sub)?;
        let path = sub.join(format!("part-{i:04}.parquet"));
        db.execute_batch(&format!(
            "COPY (SELECT r AS id, {i} AS batch, md5((r * {i})::VARCHAR) AS h, r * 0.25 AS amount \
             FROM range({rows}) t(r)) TO '{}' (FORMAT parquet, COMPRESSION {codec})",
            path.display()
        ))?;
    }
    Ok(())
}

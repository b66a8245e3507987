//! TigerBeetle for the conformance suite: snapshots of a stopped replica's data file
//! (compared byte for byte), and log segments of a running cluster restored to a point
//! in time (compared account by account, transfer by transfer).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use crate::common::{repl, tool, TigerBeetle};
use crate::Source;

/// A TigerBeetle data file with accounts and transfers, snapshotted while its
/// replica is stopped; the incremental is a second (chunked) snapshot after more
/// transfers.
#[derive(Default)]
pub struct TigerBeetleSnapshot {
    tb: Option<TigerBeetle>,
    round: u32,
}

impl TigerBeetleSnapshot {
    fn tb(&self) -> &TigerBeetle {
        self.tb.as_ref().expect("populated")
    }
}

impl Source for TigerBeetleSnapshot {
    fn kind(&self) -> &'static str {
        "tigerbeetle"
    }

    fn populate(&mut self, _dir: &Path) {
        let mut tb = TigerBeetle::start();
        repl(
            &tb.address(),
            "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700;",
        );
        repl(
            &tb.address(),
            "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=125 ledger=700 code=10, \
             id=12 debit_account_id=2 credit_account_id=3 amount=7 ledger=700 code=10;",
        );
        tb.stop();
        self.tb = Some(tb);
    }

    fn config_section(&self, _dir: &Path) -> String {
        format!(
            "[tigerbeetle]\ndata_file = \"{}\"\nbinary = \"{}\"\nreplica_args = [\"--development\"]\n",
            self.tb().data_file.display(),
            tool("tigerbeetle").display()
        )
    }

    fn back_up(&self) -> Vec<String> {
        vec!["snapshot".into(), "--kind".into(), "tigerbeetle".into()]
    }

    fn incremental(&mut self, _dir: &Path) -> Option<Vec<String>> {
        let tb = self.tb.as_mut().expect("populated");
        self.round += 1;
        let transfer = match self.round {
            1 => format!(
                "id=13 debit_account_id=3 credit_account_id=1 amount={}",
                u128::MAX
            ),
            n => format!(
                "id={} debit_account_id=1 credit_account_id=2 amount={n}",
                13 + n
            ),
        };
        tb.restart();
        repl(
            &tb.address(),
            &format!("create_transfers {transfer} ledger=700 code=10;"),
        );
        tb.stop();
        Some(self.back_up())
    }

    /// The target holds the data file alone, byte for byte the source's.
    fn compare(&self, _dir: &Path, target: &str) -> Result<(), String> {
        let data = &self.tb().data_file;
        let name = data.file_name().unwrap().to_string_lossy().into_owned();
        let files: Vec<String> = fs::read_dir(target)
            .map_err(|e| format!("{target}: {e}"))?
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if files != [name.clone()] {
            return Err(format!("{target} holds {files:?}, not {name} alone"));
        }
        same_bytes(data, &Path::new(target).join(name))
    }
}

/// TigerBeetle log segments of a running cluster, restored to now (`--at`) by
/// replaying them into a fresh data file: every account and transfer comes back
/// with its fields, timestamps included, but for the `imported` flag the replay sets.
#[derive(Default)]
pub struct TigerBeetleLogs {
    tb: Option<TigerBeetle>,
    round: u32,
}

impl TigerBeetleLogs {
    /// Every account and transfer the rounds so far created, without their flags.
    fn rows(&self, address: &str) -> Vec<serde_json::Value> {
        let transfers: Vec<String> = [11, 12]
            .into_iter()
            .chain((1..=self.round).map(|n| 20 + n))
            .map(|id| format!("id={id}"))
            .collect();
        let accounts = repl(address, "lookup_accounts id=1, id=2, id=3, id=4;");
        let transfers = repl(
            address,
            &format!("lookup_transfers {};", transfers.join(", ")),
        );
        let rows = serde_json::Deserializer::from_str(&accounts)
            .into_iter::<serde_json::Value>()
            .chain(serde_json::Deserializer::from_str(&transfers).into_iter());
        rows.map(|r| {
            let mut r = r.unwrap();
            r.as_object_mut().unwrap().remove("flags");
            r
        })
        .collect()
    }
}

impl Source for TigerBeetleLogs {
    fn kind(&self) -> &'static str {
        "tigerbeetle"
    }

    fn populate(&mut self, _dir: &Path) {
        let tb = TigerBeetle::start();
        repl(
            &tb.address(),
            "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700, id=4 code=10 ledger=700;",
        );
        repl(
            &tb.address(),
            "create_transfers id=11 debit_account_id=1 credit_account_id=2 amount=100 ledger=700 code=10, \
             id=12 debit_account_id=2 credit_account_id=3 amount=40 ledger=700 code=10 flags=pending;",
        );
        self.tb = Some(tb);
    }

    fn config_section(&self, _dir: &Path) -> String {
        format!(
            "[tigerbeetle]\naddresses = \"{}\"\nbinary = \"{}\"\nreplica_args = [\"--development\"]\n",
            self.tb.as_ref().expect("populated").address(),
            tool("tigerbeetle").display()
        )
    }

    fn back_up(&self) -> Vec<String> {
        vec!["logs".into()]
    }

    fn incremental(&mut self, _dir: &Path) -> Option<Vec<String>> {
        self.round += 1;
        let id = 20 + self.round;
        let tb = self.tb.as_ref().expect("populated");
        let post = match self.round {
            1 => "pending_id=12 amount=40 flags=post_pending_transfer".to_string(),
            n => format!("debit_account_id=3 credit_account_id=4 amount={n}"),
        };
        repl(
            &tb.address(),
            &format!("create_transfers id={id} {post} ledger=700 code=10;"),
        );
        Some(self.back_up())
    }

    /// Log segments restore through a point-in-time replay, never on their own.
    fn drill(&self) -> bool {
        false
    }

    fn restore_args(&self, _backup: &str, target: &str) -> Vec<String> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let args = [
            "restore",
            "latest",
            "--kind",
            "tigerbeetle",
            "--at",
            &now,
            "--target",
            target,
        ];
        args.map(String::from).to_vec()
    }

    fn compare(&self, _dir: &Path, target: &str) -> Result<(), String> {
        let source = self.rows(&self.tb.as_ref().expect("populated").address());
        let restored = TigerBeetle::start_on(&Path::new(target).join("0_0.tigerbeetle"));
        let got = self.rows(&restored.address());
        (source == got)
            .then_some(())
            .ok_or_else(|| format!("source {source:#?}\nrestored {got:#?}"))
    }
}

/// Whether two files hold the same bytes (read side by side: a data file is 1 GiB,
/// and hashing both would cost seconds).
fn same_bytes(a: &Path, b: &Path) -> Result<(), String> {
    let open = |p: &Path| File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            let rest = fb.read(&mut bb).unwrap();
            return (rest == 0)
                .then_some(())
                .ok_or_else(|| format!("{} is longer", b.display()));
        }
        fb.read_exact(&mut bb[..n])
            .map_err(|e| format!("{} ends before {offset} + {n}: {e}", b.display()))?;
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap() as u64;
            return Err(format!("{} differs at byte {}", b.display(), offset + i));
        }
        offset += n as u64;
    }
}

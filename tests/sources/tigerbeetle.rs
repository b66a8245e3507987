//! TigerBeetle for the conformance suite: snapshots of a stopped replica's data file
//! (compared byte for byte), and log segments of a running cluster restored to a point
//! in time (compared account by account, transfer by transfer).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{repl, tool, TigerBeetle};
use crate::{digest, tree, Source};

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

    fn compare(&self, _dir: &Path, target: &str) -> Result<(), String> {
        let data = &self.tb().data_file;
        let files = tree(Path::new(target));
        let name = data.file_name().unwrap().to_string_lossy().into_owned();
        let want = BTreeMap::from([(name, digest(data))]);
        (files == want)
            .then_some(())
            .ok_or_else(|| format!("restored {files:?}, the source is {want:?}"))
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

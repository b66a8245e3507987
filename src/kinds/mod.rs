//! What bkp backs up: one [`Descriptor`] per source kind, in [`ALL`].
//!
//! Every list of kinds in bkp is derived from this table: the `--kind` values
//! of the CLI (and those `snapshot` and `export` take), the schedules `status`
//! watches and their defaults, the retention groups of `[retention]` and their
//! default policies, the ledger's backup-type codes, the restore hints and what
//! `--at` means. A new source is one [`Kind`] variant and one descriptor here
//! (the compiler then points at each engine that must learn it), plus its room
//! under `kinds/`.
//!
//! This module is a leaf: it holds plain data and imports nothing of bkp's, so
//! that the library modules below the kinds (manifests, the ledger, retention)
//! can name a kind without a cycle.

use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod sqlite;

/// Which source a backup is of: the identity stored in every manifest
/// (`"kind"`), its directory under `manifests/` and its data prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tigerbeetle,
    Duckdb,
    Parquet,
    /// A PostgreSQL database dumped by `pg_dump`.
    Pgdump,
    /// A PostgreSQL server's data directory, by `pg_basebackup`.
    Postgres,
    /// Key material (reserved: no backup of it is made yet).
    Kms,
    /// A SQLite database file, copied by SQLite's online backup API.
    Sqlite,
}

/// Whole, or the changes since an earlier backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Full,
    Incremental,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Incremental => "incremental",
        }
    }
}

/// The subcommand that makes a kind's backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maker {
    /// `bkp snapshot --kind K`.
    Snapshot,
    /// `bkp export --kind K`.
    Export,
    /// `bkp replicate`.
    Replicate,
    /// Nothing yet.
    None,
}

/// What `restore --at TIME` means for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// No point-in-time restore: a backup is restored as it was taken.
    Never,
    /// A snapshot (or nothing) plus the captured log replayed up to TIME.
    Log,
    /// A base backup plus the archived WAL replayed up to TIME; a base is
    /// consistent only from its end on.
    Wal,
}

/// What a restore of a kind delivers at `--target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivers {
    /// A directory tree (data files, a Parquet tier, a data directory).
    Directory,
    /// One file (a database), with the files its engine keeps beside it
    /// (`beside`: suffixes of its name, such as a write-ahead log's), which
    /// belong to the target: a restore refuses them without `--force`, and
    /// with it removes them once the new file is in place (else the engine
    /// would replay them into it). `beside_is` says what they are.
    File {
        beside: &'static [&'static str],
        beside_is: &'static str,
    },
    /// A database on a server, named by `--target`.
    Database,
}

/// The retention preset a group has when `[retention]` says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Daily, weekly, monthly, yearly.
    Gfs,
    /// 24 hourly, 30 daily, 12 monthly.
    Count,
    /// Only what chains need (the newest, its chain, the log window).
    Chains,
}

/// One scheduled kind of run: a timer of the shipped units.
#[derive(Debug)]
pub struct ScheduleSpec {
    /// The name used in config (`-` as `_` there), output and metrics.
    pub name: &'static str,
    /// The subcommand, as manifests record it in `operation`.
    pub operation: &'static str,
    /// The scope its manifests carry, when the schedule is told apart by it.
    pub scope: Option<Scope>,
    /// Whether a backup of the kind's full schedule counts for this one too (a
    /// full export holds at least what an incremental taken with it would).
    pub full_counts: bool,
    /// The command line the timer runs.
    pub command: &'static str,
    /// How often the shipped timers run it (and the default RPO).
    pub every: Duration,
}

/// What a backup was taken from, as retention tells sources apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceIs {
    /// The manifest's `source` member (name), shown as "LABEL VALUE": a
    /// TigerBeetle cluster, a PostgreSQL system.
    Fact {
        name: &'static str,
        label: &'static str,
        /// What a backup that names none lacks, as a signer's scope refuses
        /// it: it would count as every source's.
        unnamed: &'static str,
    },
    /// Only the stream member tells (a database, a replicated root): not the
    /// host that ran the backup, whose name may change with every run (a
    /// container's).
    Stream,
}

/// One retention group: the `[retention.NAME]` table and the backups it holds.
#[derive(Debug)]
pub struct Group {
    pub name: &'static str,
    pub scope: Scope,
    pub preset: Preset,
}

/// Everything bkp knows about a kind that is not code.
#[derive(Debug)]
pub struct Descriptor {
    pub kind: Kind,
    /// The manifest and CLI name: `tigerbeetle`.
    pub name: &'static str,
    /// What one backup of it is called, for people: "TigerBeetle snapshot".
    pub noun: &'static str,
    /// `user_data_128` bits 120–127 of its code-12 transfers. Extend with new
    /// values, never reuse one.
    pub ledger_code: u8,
    pub maker: Maker,
    /// Help text of its `--kind` value.
    pub about: &'static str,
    /// The `operation` of the manifests `restore` takes (the others are links
    /// of a chain: log segments, incremental exports).
    pub restores: Option<&'static str>,
    /// What to run when there is nothing to restore.
    pub first: &'static str,
    pub at: At,
    pub delivers: Delivers,
    /// What `verify --drill` of one backup proves.
    pub drill: &'static str,
    /// Restored as a snapshot plus a replayed log, so its incrementals (log
    /// segments) must run unbroken from a snapshot on.
    pub replays_log: bool,
    /// The manifest member that names what was backed up, which tells one
    /// stream of backups of the kind from another (for `cleanup`'s plan).
    pub stream_member: Option<&'static str>,
    /// What tells one source of the kind from another where a store holds
    /// backups of several (retention keeps each source's own).
    pub source_is: SourceIs,
    pub schedules: &'static [ScheduleSpec],
    pub groups: &'static [Group],
}

const H: u64 = 3600;

/// Every kind, in [`Kind`] order.
pub static ALL: [Descriptor; 7] = [
    Descriptor {
        kind: Kind::Tigerbeetle,
        name: "tigerbeetle",
        noun: "TigerBeetle snapshot",
        ledger_code: 1,
        maker: Maker::Snapshot,
        about: "A TigerBeetle ledger: its data file (snapshots) and its log.",
        restores: Some("snapshot"),
        first: "run `bkp snapshot` first",
        at: At::Log,
        delivers: Delivers::Directory,
        drill: "the restored data file passes `tigerbeetle inspect integrity`, and a private replica starts on it and its rows are counted",
        replays_log: true,
        stream_member: None,
        source_is: SourceIs::Fact {
            name: "cluster_id",
            label: "cluster",
            unnamed: "TigerBeetle cluster id (the snapshot names none, as only an older bkp or a file that is no TigerBeetle data file leaves it)",
        },
        schedules: &[
            ScheduleSpec {
                name: "snapshot",
                operation: "snapshot",
                scope: None,
                full_counts: false,
                command: "bkp snapshot --kind tigerbeetle",
                every: Duration::from_secs(6 * H),
            },
            ScheduleSpec {
                name: "logs",
                operation: "logs",
                scope: None,
                full_counts: false,
                command: "bkp logs",
                every: Duration::from_secs(15 * 60),
            },
        ],
        groups: &[
            Group {
                name: "snapshot",
                scope: Scope::Full,
                preset: Preset::Gfs,
            },
            Group {
                name: "logs",
                scope: Scope::Incremental,
                preset: Preset::Chains,
            },
        ],
    },
    Descriptor {
        kind: Kind::Duckdb,
        name: "duckdb",
        noun: "DuckDB export",
        ledger_code: 2,
        maker: Maker::Export,
        about: "The DuckDB hot tier, as Parquet.",
        restores: Some("export"),
        first: "run `bkp export --full` first",
        at: At::Never,
        delivers: Delivers::File {
            beside: &[".wal"],
            beside_is: "the write-ahead log of a DuckDB database at that path",
        },
        drill: "the chain of exports (the full and its incrementals) is rebuilt into a new database and every table's row count and content fingerprint checked",
        replays_log: false,
        stream_member: Some("database"),
        source_is: SourceIs::Stream,
        schedules: &[
            ScheduleSpec {
                name: "export-full",
                operation: "export",
                scope: Some(Scope::Full),
                full_counts: false,
                command: "bkp export --kind duckdb --full",
                every: Duration::from_secs(24 * H),
            },
            ScheduleSpec {
                name: "export-incremental",
                operation: "export",
                scope: Some(Scope::Incremental),
                full_counts: true,
                command: "bkp export --kind duckdb",
                every: Duration::from_secs(6 * H),
            },
        ],
        groups: &[
            Group {
                name: "export_full",
                scope: Scope::Full,
                preset: Preset::Gfs,
            },
            Group {
                name: "export_incremental",
                scope: Scope::Incremental,
                preset: Preset::Chains,
            },
        ],
    },
    Descriptor {
        kind: Kind::Parquet,
        name: "parquet",
        noun: "Parquet replication",
        ledger_code: 3,
        maker: Maker::Replicate,
        about: "The Parquet cold tier, as replicated.",
        restores: Some("replicate"),
        first: "run `bkp replicate` first",
        at: At::Never,
        delivers: Delivers::Directory,
        drill: "the replicated files are restored and every row of every Parquet file decoded, its count checked against the file's footer",
        replays_log: false,
        stream_member: Some("root"),
        source_is: SourceIs::Stream,
        schedules: &[ScheduleSpec {
            name: "replicate",
            operation: "replicate",
            scope: None,
            full_counts: false,
            command: "bkp replicate",
            every: Duration::from_secs(H),
        }],
        groups: &[Group {
            name: "replicate",
            scope: Scope::Full,
            preset: Preset::Count,
        }],
    },
    Descriptor {
        kind: Kind::Pgdump,
        name: "pgdump",
        noun: "PostgreSQL dump",
        ledger_code: 5,
        maker: Maker::Export,
        about: "A PostgreSQL dump (`pg_dump`).",
        restores: Some("export"),
        first: "run `bkp export --kind pgdump` first",
        at: At::Never,
        delivers: Delivers::Database,
        drill: "the dump is read end to end into `pg_restore`, which decodes every data block, and each table's rows are checked against the counts the dump recorded",
        replays_log: false,
        stream_member: Some("database"),
        source_is: SourceIs::Stream,
        schedules: &[ScheduleSpec {
            name: "pgdump",
            operation: "export",
            scope: None,
            full_counts: false,
            command: "bkp export --kind pgdump",
            every: Duration::from_secs(H),
        }],
        groups: &[Group {
            name: "pgdump",
            scope: Scope::Full,
            // The requirement a dump schedule comes from: 24 hourly, 30 daily, 12 monthly.
            preset: Preset::Count,
        }],
    },
    Descriptor {
        kind: Kind::Postgres,
        name: "postgres",
        noun: "PostgreSQL base backup",
        ledger_code: 6,
        maker: Maker::Snapshot,
        about: "A PostgreSQL base backup (`pg_basebackup`).",
        restores: Some("snapshot"),
        first: "run `bkp snapshot --kind postgres` first",
        at: At::Wal,
        delivers: Delivers::Directory,
        drill: "the base backup is unpacked and `pg_verifybackup` checks every file and the WAL it needs",
        replays_log: false,
        stream_member: None,
        source_is: SourceIs::Fact {
            name: "system_identifier",
            label: "system",
            unnamed: "PostgreSQL system identifier (the base backup names none, as only an older bkp that could not read the server's facts leaves it)",
        },
        schedules: &[ScheduleSpec {
            name: "pgbase",
            operation: "snapshot",
            scope: None,
            full_counts: false,
            command: "bkp snapshot --kind postgres",
            every: Duration::from_secs(24 * H),
        }],
        groups: &[Group {
            name: "pgbase",
            scope: Scope::Full,
            preset: Preset::Gfs,
        }],
    },
    Descriptor {
        kind: Kind::Kms,
        name: "kms",
        noun: "key-material backup",
        ledger_code: 4,
        maker: Maker::None,
        about: "Key material (reserved).",
        restores: None,
        first: "no bkp command makes key-material backups yet",
        at: At::Never,
        delivers: Delivers::Directory,
        drill: "nothing: key-material backups are reserved",
        replays_log: false,
        stream_member: None,
        source_is: SourceIs::Stream,
        schedules: &[],
        groups: &[],
    },
    Descriptor {
        kind: Kind::Sqlite,
        name: "sqlite",
        noun: "SQLite copy",
        ledger_code: 7,
        maker: Maker::Snapshot,
        about: "A SQLite database file, copied live by SQLite's online backup API.",
        restores: Some("snapshot"),
        first: "run `bkp snapshot --kind sqlite` first",
        at: At::Never,
        delivers: Delivers::File {
            beside: &["-wal", "-shm", "-journal"],
            beside_is: "SQLite's record of writes to a database at that path",
        },
        drill: "the copy is restored to a scratch file, passes SQLite's `PRAGMA integrity_check`, and every table's rows are counted against the manifest",
        replays_log: false,
        stream_member: Some("database"),
        source_is: SourceIs::Stream,
        schedules: &[ScheduleSpec {
            name: "sqlite",
            operation: "snapshot",
            scope: None,
            full_counts: false,
            command: "bkp snapshot --kind sqlite",
            every: Duration::from_secs(6 * H),
        }],
        groups: &[Group {
            name: "sqlite",
            scope: Scope::Full,
            preset: Preset::Gfs,
        }],
    },
];

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 7] = [
        Kind::Tigerbeetle,
        Kind::Duckdb,
        Kind::Parquet,
        Kind::Pgdump,
        Kind::Postgres,
        Kind::Kms,
        Kind::Sqlite,
    ];

    /// This kind's descriptor.
    pub fn describe(self) -> &'static Descriptor {
        // `ALL` is in `Kind` order; the unit test below keeps it so.
        &ALL[self as usize]
    }

    pub fn as_str(&self) -> &'static str {
        self.describe().name
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether its incrementals must run unbroken from a snapshot on.
    pub fn replays_log(self) -> bool {
        self.describe().replays_log
    }

    /// The code its ledger transfers carry (`user_data_128` bits 120–127).
    pub fn ledger_code(self) -> u8 {
        self.describe().ledger_code
    }

    /// The kind a ledger code stands for, if any.
    pub fn from_ledger_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.ledger_code() == code)
    }

    /// The kinds a subcommand makes backups of (the values its `--kind` takes).
    pub fn made_by(maker: Maker) -> impl Iterator<Item = Kind> {
        Kind::ALL
            .into_iter()
            .filter(move |k| k.describe().maker == maker)
    }
}

/// A schedule: an index into [`schedules`], in [`ALL`] order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Schedule(u8);

static SCHEDULES: LazyLock<Vec<(Kind, &'static ScheduleSpec)>> = LazyLock::new(|| {
    ALL.iter()
        .flat_map(|d| d.schedules.iter().map(move |s| (d.kind, s)))
        .collect()
});

/// Every schedule of every kind, in [`ALL`] order.
pub fn schedules() -> impl Iterator<Item = Schedule> {
    (0..SCHEDULES.len()).map(|i| Schedule(i as u8))
}

impl Schedule {
    pub fn spec(self) -> &'static ScheduleSpec {
        SCHEDULES[self.0 as usize].1
    }

    /// The kind of backup the schedule makes.
    pub fn kind(self) -> Kind {
        SCHEDULES[self.0 as usize].0
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The schedule named `name`, spelled as output writes it (`export-full`)
    /// or as a config key (`export_full`).
    pub fn parse(name: &str) -> Option<Schedule> {
        schedules().find(|s| s.as_str() == name || s.key() == name)
    }

    /// Its name as a TOML key: `export_full`.
    pub fn key(self) -> String {
        self.as_str().replace('-', "_")
    }

    /// A schedule known to exist, for tests.
    #[cfg(test)]
    pub fn named(name: &str) -> Schedule {
        Schedule::parse(name).unwrap_or_else(|| panic!("no schedule {name:?}"))
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Schedule, D::Error> {
        let name = String::deserialize(d)?;
        Schedule::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("{name:?} is not a schedule")))
    }
}

/// Every retention group of every kind, with its kind, in [`ALL`] order.
pub fn groups() -> impl Iterator<Item = (Kind, &'static Group)> {
    ALL.iter()
        .flat_map(|d| d.groups.iter().map(move |g| (d.kind, g)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_table_is_in_kind_order_and_its_names_and_codes_are_unique() {
        for (i, d) in ALL.iter().enumerate() {
            assert_eq!(d.kind as usize, i, "{} is out of order", d.name);
            assert_eq!(Kind::ALL[i], d.kind);
            assert_eq!(Kind::parse(d.name), Some(d.kind));
            assert_eq!(
                serde_json::to_value(d.kind).unwrap(),
                serde_json::Value::from(d.name),
                "the manifest name is the descriptor's"
            );
            assert_eq!(Kind::from_ledger_code(d.ledger_code), Some(d.kind));
        }
        let unique = |v: Vec<String>| v.iter().collect::<BTreeSet<_>>().len() == v.len();
        assert!(unique(ALL.iter().map(|d| d.name.to_string()).collect()));
        assert!(unique(
            ALL.iter().map(|d| d.ledger_code.to_string()).collect()
        ));
        assert!(unique(
            schedules().map(|s| s.as_str().to_string()).collect()
        ));
        assert!(unique(groups().map(|(_, g)| g.name.to_string()).collect()));
    }

    #[test]
    fn ledger_codes_are_the_wire_values() {
        // Stored in transfers already recorded: never change one.
        let codes: Vec<(Kind, u8)> = Kind::ALL.map(|k| (k, k.ledger_code())).to_vec();
        assert_eq!(
            codes,
            [
                (Kind::Tigerbeetle, 1),
                (Kind::Duckdb, 2),
                (Kind::Parquet, 3),
                (Kind::Pgdump, 5),
                (Kind::Postgres, 6),
                (Kind::Kms, 4),
                (Kind::Sqlite, 7),
            ]
        );
        assert_eq!(Kind::from_ledger_code(8), None);
    }

    #[test]
    fn every_kind_that_is_made_can_be_restored_and_scheduled() {
        for d in &ALL {
            if d.maker == Maker::None {
                continue;
            }
            assert!(d.restores.is_some(), "{}", d.name);
            assert!(!d.schedules.is_empty(), "{}", d.name);
            assert!(!d.groups.is_empty(), "{}", d.name);
            assert!(d.first.starts_with("run `bkp "), "{}", d.name);
        }
    }

    #[test]
    fn schedules_round_trip_by_name() {
        for s in schedules() {
            assert_eq!(Schedule::parse(s.as_str()), Some(s));
            assert_eq!(Schedule::parse(&s.key()), Some(s), "either spelling");
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        }
        assert!(serde_json::from_str::<Schedule>("\"hourly\"").is_err());
    }
}

//! PostgreSQL for the conformance suite: a dump restored into a new database and a base
//! backup restored into a data directory a server then starts on, both compared row by
//! row with the source database. Each test has a server of its own, so that what it
//! finds there (no database left by a refused restore) is its own doing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::postgres::Postgres;
use crate::common::unique_name;
use crate::{wait_until_unused, Source};

/// What a PostgreSQL database must carry: schemas, awkward values, a sequence, a
/// view, a function, constraints and an index.
const PG_APP: &str = r#"
CREATE SCHEMA tenant_a;
CREATE TABLE public.accounts (id bigserial PRIMARY KEY, name text NOT NULL, balance numeric(30, 8),
    tags text[], doc jsonb, raw bytea, seen timestamptz);
CREATE TABLE tenant_a.orders (id int PRIMARY KEY, account bigint REFERENCES public.accounts, note text);
CREATE TABLE public."Odd ""Name""" (x int);
CREATE INDEX accounts_name ON public.accounts (name);
CREATE VIEW public.rich AS SELECT name FROM public.accounts WHERE balance > 100;
CREATE FUNCTION public.double_it(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';
INSERT INTO public.accounts (name, balance, tags, doc, raw, seen)
SELECT 'acct ' || g, g * 1.5, ARRAY['t' || g, NULL], jsonb_build_object('g', g), decode(md5(g::text), 'hex'),
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 500) g;
INSERT INTO public.accounts (name, balance, tags, doc, raw, seen)
VALUES (E'tab\there, newline\nthere, backslash \\ and quote '' "', NULL, '{}', 'null', '\x00ff', NULL);
INSERT INTO tenant_a.orders SELECT g, g, 'a' || g FROM generate_series(1, 100) g;
"#;

/// A server of the test's own with a database made from [`PG_APP`]: what a
/// test finds on it (no database left by a refused restore) is its own doing.
fn pg_app() -> (Postgres, String) {
    let pg = Postgres::start();
    let db = unique_name("app");
    pg.create_db(&db, PG_APP);
    (pg, db)
}

/// `pg_dump` of one database, restored into a new database on the same server.
#[derive(Default)]
pub struct PgDump {
    pg: Option<(Postgres, String)>,
}

impl PgDump {
    fn pg(&self) -> (&Postgres, &str) {
        let (pg, db) = self.pg.as_ref().expect("populated");
        (pg, db)
    }
}

impl Source for PgDump {
    fn kind(&self) -> &'static str {
        "pgdump"
    }

    fn populate(&mut self, _dir: &Path) {
        self.pg = Some(pg_app());
    }

    fn config_section(&self, _dir: &Path) -> String {
        let (pg, db) = self.pg();
        pg.toml(db)
    }

    fn back_up(&self) -> Vec<String> {
        ["export", "--kind", "pgdump"].map(String::from).to_vec()
    }

    /// A database name.
    fn target(&self, _dir: &Path, name: &str) -> String {
        format!("restored_{name}")
    }

    fn compare(&self, _dir: &Path, target: &str) -> Result<(), String> {
        let (pg, db) = self.pg();
        let (source, restored) = (pg.content(db), pg.content(target));
        (source == restored)
            .then_some(())
            .ok_or_else(|| format!("source:\n{source}\nrestored:\n{restored}"))
    }

    /// Every database on the server, with the content of the restored ones.
    fn targets(&self, _dir: &Path) -> BTreeMap<String, String> {
        let (pg, db) = self.pg();
        let restored = |d: &str| d.starts_with("restored_") || d.starts_with("bkp_");
        pg.databases()
            .into_iter()
            .filter(|d| d != db)
            .map(|d| {
                let content = if restored(&d) {
                    pg.content(&d)
                } else {
                    String::new()
                };
                (d, content)
            })
            .collect()
    }
}

/// `pg_basebackup` of the whole server, restored into a data directory that a
/// server then starts on.
#[derive(Default)]
pub struct PgBase {
    pg: Option<(Postgres, String)>,
}

impl Source for PgBase {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn populate(&mut self, dir: &Path) {
        // The restored directory must be reachable by the server's user.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        self.pg = Some(pg_app());
    }

    fn config_section(&self, _dir: &Path) -> String {
        let (pg, db) = self.pg.as_ref().expect("populated");
        format!("{}checkpoint = \"fast\"\n", pg.toml(db))
    }

    fn back_up(&self) -> Vec<String> {
        ["snapshot", "--kind", "postgres"]
            .map(String::from)
            .to_vec()
    }

    fn compare(&self, _dir: &Path, target: &str) -> Result<(), String> {
        let (pg, db) = self.pg.as_ref().expect("populated");
        let restored = Postgres::start_on(Path::new(target));
        let differs = [db.as_str(), "postgres"].into_iter().find_map(|d| {
            let (source, got) = (pg.content(d), restored.content(d));
            (source != got).then(|| format!("{d}: source:\n{source}\nrestored:\n{got}"))
        });
        // The server is killed: its processes must be gone before the next step
        // looks at the directory.
        drop(restored);
        wait_until_unused(Path::new(target));
        differs.map_or(Ok(()), Err)
    }
}

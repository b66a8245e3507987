//! A catalog object's document read as it inflates. A base's entries may be
//! handed one by one to a [`Pass`] instead of collected: ten years of
//! manifests are hundreds of MiB once parsed, and a reader that keeps only
//! part of them must not hold them all first. A delta's entries (a few
//! hundred at most) are collected.
//!
//! The members are read as bkp writes them, the entries after the fields that
//! say what the document is; a document whose entries come before them is not
//! bkp's, and is refused.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use time::OffsetDateTime;

use super::pass::{Head, Pass};
use super::{Doc, Entry, Tagger};
use crate::id::BackupId;

#[derive(Deserialize)]
struct Rfc3339(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

/// Reads a document; a base's entries go to `pass` when there is one (they
/// are then not in the document returned). `tagger` tagged the document.
pub(super) struct DocSeed<'p, 'a> {
    pub pass: Option<&'p mut Pass<'a>>,
    pub tagger: &'p Tagger,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_, '_> {
    type Value = Doc;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, '_> {
    type Value = Doc;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a bkp catalog")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Doc, A::Error> {
        let DocSeed { mut pass, tagger } = self;
        let mut head = Head::default();
        let mut entries = None;
        let mut removed: Option<Vec<BackupId>> = None;
        let mut damaged: Option<Vec<String>> = None;
        let mut seen_base = false;
        let mut seen_understands = false;
        let late = |entries: &Option<Vec<Entry>>, name: &str| -> Result<(), A::Error> {
            match entries {
                Some(_) => Err(de::Error::custom(format!("`{name}` after the entries"))),
                None => Ok(()),
            }
        };
        while let Some(name) = a.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*name {
                "schema" => {
                    late(&entries, &name)?;
                    once(&head.schema, &name)?;
                    head.schema = Some(a.next_value()?);
                }
                "kind" => {
                    late(&entries, &name)?;
                    once(&head.kind, &name)?;
                    head.kind = Some(a.next_value()?);
                }
                "seq" => {
                    late(&entries, &name)?;
                    once(&head.seq, &name)?;
                    head.seq = Some(a.next_value()?);
                }
                "base" => {
                    late(&entries, &name)?;
                    if std::mem::replace(&mut seen_base, true) {
                        return Err(de::Error::duplicate_field("base"));
                    }
                    head.base = a.next_value()?;
                }
                "written_at" => {
                    late(&entries, &name)?;
                    once(&head.written_at, &name)?;
                    head.written_at = Some(a.next_value::<Rfc3339>()?.0);
                }
                "understands" => {
                    late(&entries, &name)?;
                    if std::mem::replace(&mut seen_understands, true) {
                        return Err(de::Error::duplicate_field("understands"));
                    }
                    head.understands = a.next_value()?;
                }
                "entries" => {
                    once(&entries, &name)?;
                    let streamed = pass.as_deref_mut().filter(|_| head.base.is_none());
                    entries = Some(match streamed {
                        Some(p) => {
                            p.begin(&head, tagger).map_err(de::Error::custom)?;
                            a.next_value_seed(Stream { pass: p, tagger })?;
                            Vec::new()
                        }
                        None => a.next_value()?,
                    });
                }
                "removed" => {
                    once(&removed, &name)?;
                    removed = Some(a.next_value()?);
                }
                "damaged" => {
                    once(&damaged, &name)?;
                    damaged = Some(a.next_value()?);
                }
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Doc {
            schema: head
                .schema
                .ok_or_else(|| de::Error::missing_field("schema"))?,
            kind: head.kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            seq: head.seq.ok_or_else(|| de::Error::missing_field("seq"))?,
            base: head.base,
            written_at: head
                .written_at
                .ok_or_else(|| de::Error::missing_field("written_at"))?,
            understands: head.understands,
            entries: entries.unwrap_or_default(),
            removed: removed.unwrap_or_default(),
            damaged: damaged.unwrap_or_default(),
        })
    }
}

fn once<T, E: de::Error>(slot: &Option<T>, name: &str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::custom(format!("duplicate field `{name}`"))),
        None => Ok(()),
    }
}

/// A base's entries, each handed to the pass as it is read.
struct Stream<'p, 'a> {
    pass: &'p mut Pass<'a>,
    tagger: &'p Tagger,
}

impl<'de> DeserializeSeed<'de> for Stream<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Stream<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of catalog entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while let Some(e) = a.next_element::<Entry>()? {
            self.pass.entry(self.tagger, e).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

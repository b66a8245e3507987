//! A manifest's `source` member: the kind's facts about what was backed up
//! (a data file's path, the log's range, a database's name), a JSON object.
//!
//! Held as a vector sorted by name, the names shared: a year of manifests
//! holds the same few names tens of thousands of times, and a map node per
//! manifest cost more than the facts themselves. It reads and writes as the
//! map it replaces (`BTreeMap<String, Value>`): members sorted by name, a
//! name given twice taking its last value.

use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Sources of at most this many facts (a real one has a few dozen) share
/// their names (see [`super::shared`]); a planted one with more gets its own.
const FACTS_SHARED_MAX: usize = 64;

fn name(s: &str) -> Arc<str> {
    super::shared::intern(s)
}

/// A recorded PostgreSQL `system_identifier`: a string of digits, as bkp
/// writes it (it does not fit JSON's safe integers), or a number.
pub fn system_identifier(v: &Value) -> Option<u64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
}

/// The facts of a manifest's source, by name (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts(Vec<(Arc<str>, Value)>);

impl Facts {
    pub fn new() -> Facts {
        Facts::default()
    }

    fn at(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.at(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.at(key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.at(key).is_ok()
    }

    /// Sets `key` to `value`; the value it replaces.
    pub fn insert(&mut self, key: &str, value: Value) -> Option<Value> {
        match self.at(key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name(key), value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.at(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The facts, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Facts {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Facts {
        let mut f = Facts::new();
        f.extend(iter);
        f
    }
}

impl<K: AsRef<str>> Extend<(K, Value)> for Facts {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k.as_ref(), v);
        }
    }
}

impl From<std::collections::BTreeMap<String, Value>> for Facts {
    fn from(m: std::collections::BTreeMap<String, Value>) -> Facts {
        // Already sorted, each name once.
        Facts(m.into_iter().map(|(k, v)| (name(&k), v)).collect())
    }
}

impl Serialize for Facts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(&**k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Facts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Facts, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Facts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Facts, A::Error> {
                let mut read = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = a.next_entry::<std::borrow::Cow<'de, str>, Value>()? {
                    read.push((k, v));
                }
                let shared = read.len() <= FACTS_SHARED_MAX;
                let mut read: Vec<(Arc<str>, Value)> = read
                    .into_iter()
                    .map(|(k, v)| (if shared { name(&k) } else { Arc::from(&*k) }, v))
                    .collect();
                // Sorted once (a planted manifest may name thousands), in
                // order among equal names: the last one given stays.
                read.sort_by(|x, y| x.0.cmp(&y.0));
                let mut facts: Vec<(Arc<str>, Value)> = Vec::with_capacity(read.len());
                for (k, v) in read {
                    match facts.last_mut() {
                        Some(last) if last.0 == k => last.1 = v,
                        _ => facts.push((k, v)),
                    }
                }
                Ok(Facts(facts))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::shared::{NAMES, SHARED_MAX as NAME_SHARED_MAX};
    use std::collections::BTreeMap;

    #[test]
    fn facts_read_and_write_as_the_map_they_replace() {
        // Out of order, a name given twice, an escaped name.
        let text = r#"{"until":"9","after":"1","cluster_id":"0","after":"2","a\"b":{"x":[1]}}"#;
        let map: BTreeMap<String, Value> = serde_json::from_str(text).unwrap();
        let facts: Facts = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&facts).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(
            serde_json::to_string_pretty(&facts).unwrap(),
            serde_json::to_string_pretty(&map).unwrap()
        );
        assert_eq!(facts.get("after"), Some(&Value::from("2")));
        assert_eq!(Facts::from(map.clone()), facts);
        let back: BTreeMap<String, Value> = facts
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(back, map);
        let mut f = facts.clone();
        assert_eq!(f.insert("after", "3".into()), Some("2".into()));
        assert_eq!(f.remove("until"), Some("9".into()));
        assert!(!f.contains_key("until") && f.len() == 3);
        let names: Vec<&str> = f.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["a\"b", "after", "cluster_id"]);
        assert!(serde_json::from_str::<Facts>("[1]").is_err());
        // Many names read in one sort, not one insertion each.
        let many: String = (0..200_000)
            .rev()
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let many: Facts = serde_json::from_str(&format!("{{{many}}}")).unwrap();
        assert_eq!(many.len(), 200_000);
        assert_eq!(many.get("k7"), Some(&Value::from(7)));
        // Nor do they take the shared names.
        assert!(!NAMES.lock().unwrap().contains("k7"));
    }

    #[test]
    fn names_are_shared_up_to_a_bound() {
        let a: Facts = serde_json::from_str(r#"{"data_file":"x"}"#).unwrap();
        let b: Facts = serde_json::from_str(r#"{"data_file":"y"}"#).unwrap();
        assert!(Arc::ptr_eq(&a.0[0].0, &b.0[0].0));
        let long = "n".repeat(NAME_SHARED_MAX + 1);
        let c = Facts::from_iter([(long.clone(), Value::Null)]);
        let d = Facts::from_iter([(long, Value::Null)]);
        assert!(!Arc::ptr_eq(&c.0[0].0, &d.0[0].0));
    }
}

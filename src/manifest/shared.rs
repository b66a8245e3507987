//! Short strings a year of manifests repeats tens of thousands of times (the
//! schema, the operation, the host, bkp's version, the store's and the key's
//! ids, the facts' names), held once per process.
//!
//! At most [`NAMES_MAX`] strings are shared in each of its two tables (the
//! facts' names, and [`Shared`] strings), each at most [`SHARED_MAX`]
//! bytes: a planted manifest with many or long strings gets its own copies,
//! and cannot grow a table. (Planted strings that fill one cost later
//! strings their sharing, not their correctness.)

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(super) static NAMES: Mutex<BTreeSet<Arc<str>>> = Mutex::new(BTreeSet::new());
const NAMES_MAX: usize = 1024;
pub(super) const SHARED_MAX: usize = 64;

/// `s`, shared with every other holder of the same string where the table
/// allows (see the module documentation).
pub fn intern(s: &str) -> Arc<str> {
    shared_in(&NAMES, s, |s| Arc::from(s))
}

/// `s` from `table`, or made by `make` (and kept there while it has room).
fn shared_in<T: Clone + Ord + std::borrow::Borrow<str>>(
    table: &Mutex<BTreeSet<T>>,
    s: &str,
    make: impl Fn(&str) -> T,
) -> T {
    if s.len() <= SHARED_MAX {
        if let Ok(mut names) = table.lock() {
            if let Some(n) = names.get(s) {
                return n.clone();
            }
            if names.len() < NAMES_MAX {
                let n = make(s);
                names.insert(n.clone());
                return n;
            }
        }
    }
    make(s)
}

/// A [`Shared`]'s string behind one pointer, not two (a year of candidates
/// for retention holds two each): compares, orders and hashes as the string.
#[derive(Clone)]
struct Thin(Arc<Box<str>>);

static THIN: Mutex<BTreeSet<Thin>> = Mutex::new(BTreeSet::new());

impl Deref for Thin {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Thin {
    fn borrow(&self) -> &str {
        self
    }
}

impl PartialEq for Thin {
    fn eq(&self, other: &Thin) -> bool {
        **self == **other
    }
}

impl Eq for Thin {}

impl PartialOrd for Thin {
    fn partial_cmp(&self, other: &Thin) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Thin {
    fn cmp(&self, other: &Thin) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::hash::Hash for Thin {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (**self).hash(h)
    }
}

fn thin(s: &str) -> Thin {
    shared_in(&THIN, s, |s| Thin(Arc::new(Box::from(s))))
}

/// A string held once per process (see the module documentation); reads,
/// writes, compares and prints as the string it holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shared(Thin);

impl Shared {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::from("")
    }
}

impl Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Shared {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Shared {
    fn from(s: &str) -> Shared {
        Shared(thin(s))
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Shared {
        Shared(thin(&s))
    }
}

impl From<&String> for Shared {
    fn from(s: &String) -> Shared {
        Shared(thin(s))
    }
}

impl From<Shared> for String {
    fn from(s: Shared) -> String {
        s.0.to_string()
    }
}

impl PartialEq<str> for Shared {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Shared {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Shared {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Shared> for str {
    fn eq(&self, other: &Shared) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Shared> for &str {
    fn eq(&self, other: &Shared) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Shared> for String {
    fn eq(&self, other: &Shared) -> bool {
        **self == *other.0
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Shared {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shared, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Shared::from(&*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_read_are_one_allocation() {
        let a: Shared = serde_json::from_str(r#""bkp.manifest/2.0""#).unwrap();
        let b: Shared = serde_json::from_str(r#""bkp.manifest/2.0""#).unwrap();
        assert!(Arc::ptr_eq(&a.0 .0, &b.0 .0));
        assert_eq!(a, "bkp.manifest/2.0");
        assert_eq!(serde_json::to_string(&b).unwrap(), r#""bkp.manifest/2.0""#);
        // An escaped string reads as what it says.
        let e: Shared = serde_json::from_str(r#""h\u00e9""#).unwrap();
        assert_eq!(e, "hé");
    }

    #[test]
    fn a_long_string_is_not_shared() {
        let long = "x".repeat(SHARED_MAX + 1);
        let (a, b) = (Shared::from(&long), Shared::from(&long));
        assert!(!Arc::ptr_eq(&a.0 .0, &b.0 .0));
        assert_eq!(a, long);
    }
}

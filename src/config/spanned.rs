//! Typed deserialization of one component table that still knows which key went wrong.
//!
//! Components are tables with a `type` key that picks the struct for the rest. serde's
//! internally tagged enums would do the dispatch, but they buffer the table first and lose
//! every position, so an error could only point at the table header and a wrong type would not
//! even name its key. Instead each value keeps its span (`toml::Spanned`), and the map is fed to
//! the typed struct one key at a time while the key in hand is remembered: whatever error
//! comes back belongs to that key.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::sink::OwnKeys;

/// A table whose values carry their position in the file.
pub type Table = BTreeMap<String, Spanned<toml::Value>>;

/// Where a typed read failed: the key (with its span) when one was in hand, and serde's words.
#[derive(Debug)]
pub struct KeyError {
    pub key: Option<(String, Range<usize>)>,
    pub message: String,
}

/// Deserializes `T` from `table`, naming the offending key on error. A missing field is
/// reported with no key (the caller points at the table itself).
pub fn typed<T: DeserializeOwned>(table: Table) -> Result<T, KeyError> {
    located(table, |pairs| {
        T::deserialize(serde::de::value::MapDeserializer::<_, toml::de::Error>::new(pairs))
    })
}

/// [`typed`] for a sink kind's own reader, which is not generic: it gets the pairs as
/// [`OwnKeys`] and deserializes its own struct from them.
pub fn read<R>(
    table: Table,
    read: impl FnOnce(OwnKeys<'_>) -> Result<R, toml::de::Error>,
) -> Result<R, KeyError> {
    located(table, |pairs| read(OwnKeys::new(pairs)))
}

/// Runs `read` over the pairs of `table`; an error belongs to the key in hand when it came.
fn located<R>(
    table: Table,
    read: impl FnOnce(Pairs<'_>) -> Result<R, toml::de::Error>,
) -> Result<R, KeyError> {
    let current = RefCell::new(None);
    let pairs = Pairs {
        inner: table.into_iter(),
        current: &current,
    };
    read(pairs).map_err(|e| KeyError {
        key: current.take(),
        message: e.message().to_string(),
    })
}

/// Yields the pairs and records the key being read; `None` once exhausted, so errors raised
/// after the last key (missing fields) are not pinned on it.
struct Pairs<'a> {
    inner: std::collections::btree_map::IntoIter<String, Spanned<toml::Value>>,
    current: &'a RefCell<Option<(String, Range<usize>)>>,
}

impl Iterator for Pairs<'_> {
    type Item = (String, toml::Value);

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.inner.next();
        *self.current.borrow_mut() = next.as_ref().map(|(k, v)| (k.clone(), v.span()));
        next.map(|(k, v)| (k, v.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Fwd {
        address: String,
        #[serde(default)]
        max: u32,
    }

    fn table(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn names_unknown_key_with_its_span() {
        let text = "address = \"x\"\nbogus = 1\n";
        let e = typed::<Fwd>(table(text)).unwrap_err();
        let (key, span) = e.key.unwrap();
        assert_eq!(key, "bogus");
        assert_eq!(&text[span], "1");
        assert!(e.message.contains("unknown field `bogus`"), "{}", e.message);
    }

    #[test]
    fn names_key_of_wrong_type() {
        let e = typed::<Fwd>(table("address = \"x\"\nmax = \"big\"\n")).unwrap_err();
        assert_eq!(e.key.unwrap().0, "max");
        assert!(e.message.contains("expected u32"), "{}", e.message);
    }

    #[test]
    fn missing_field_has_no_key() {
        let e = typed::<Fwd>(table("max = 1\n")).unwrap_err();
        assert!(e.key.is_none());
        assert!(
            e.message.contains("missing field `address`"),
            "{}",
            e.message
        );
    }
}

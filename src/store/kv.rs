//! The one storage interface both backends implement: typed tables (declared once, in
//! `tables.rs`) with `get`, `insert`, `remove`, ordered `iter`/`range` and `len`, inside a
//! read or a write transaction. Every record file in `store/` is written once over this
//! interface, so redb and PostgreSQL behave the same by construction, and the store tests
//! prove it by running against both.
//!
//! redb is used directly. On PostgreSQL each logical table is one SQL table of
//! `(k bytea primary key, v bytea)`, with keys encoded so that byte order is redb's order
//! (`Col::encode`): a range scan (usage by time, the request-log index newest first) walks
//! the same rows in the same order on both.

use super::postgres::PgTxn;
use super::StoreError;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use std::marker::PhantomData;

/// A column type a table can have: one of the redb key/value types the tables use, with
/// its owned form and its PostgreSQL encoding (order-preserving for key types).
pub trait Col: redb::Value + 'static {
    type Owned: Send + 'static;
    fn own(value: Self::SelfType<'_>) -> Self::Owned;
    /// The owned form lent back as the value redb takes (copying a table between backends).
    fn lend(owned: &Self::Owned) -> Self::SelfType<'_>;
    fn encode(value: &Self::SelfType<'_>) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self::Owned, StoreError>;
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt("stored key or value", format!("malformed {what}"))
}

impl Col for &'static str {
    type Owned = String;
    fn lend(owned: &String) -> &str {
        owned
    }
    fn own(value: &str) -> String {
        value.to_string()
    }
    fn encode(value: &&str) -> Vec<u8> {
        value.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<String, StoreError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("text"))
    }
}

impl Col for &'static [u8] {
    type Owned = Vec<u8>;
    fn lend(owned: &Vec<u8>) -> &[u8] {
        owned
    }
    fn own(value: &[u8]) -> Vec<u8> {
        value.to_vec()
    }
    fn encode(value: &&[u8]) -> Vec<u8> {
        value.to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(bytes.to_vec())
    }
}

impl Col for u128 {
    type Owned = u128;
    fn lend(owned: &u128) -> u128 {
        *owned
    }
    fn own(value: u128) -> u128 {
        value
    }
    fn encode(value: &u128) -> Vec<u8> {
        value.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<u128, StoreError> {
        Ok(u128::from_be_bytes(bytes.try_into().map_err(|_| corrupt("u128"))?))
    }
}

impl Col for i64 {
    type Owned = i64;
    fn lend(owned: &i64) -> i64 {
        *owned
    }
    fn own(value: i64) -> i64 {
        value
    }
    /// Big-endian with the sign bit flipped: byte order is numeric order.
    fn encode(value: &i64) -> Vec<u8> {
        ((*value as u64) ^ (1 << 63)).to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<i64, StoreError> {
        let raw = u64::from_be_bytes(bytes.try_into().map_err(|_| corrupt("i64"))?);
        Ok((raw ^ (1 << 63)) as i64)
    }
}

impl Col for f64 {
    type Owned = f64;
    fn lend(owned: &f64) -> f64 {
        *owned
    }
    fn own(value: f64) -> f64 {
        value
    }
    fn encode(value: &f64) -> Vec<u8> {
        value.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<f64, StoreError> {
        Ok(f64::from_be_bytes(bytes.try_into().map_err(|_| corrupt("f64"))?))
    }
}

impl Col for () {
    type Owned = ();
    fn lend(_: &()) {}
    fn own(_: ()) {}
    fn encode(_: &()) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A string inside a composite key: every 0x00 escaped as 0x00 0xFF and the end marked by
/// 0x00 0x01, so the concatenation sorts as the tuple does (a prefix sorts first).
fn encode_text_part(text: &str, out: &mut Vec<u8>) {
    for &byte in text.as_bytes() {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

fn decode_text_part(bytes: &[u8]) -> Result<(String, &[u8]), StoreError> {
    let mut text = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            match bytes.get(i + 1) {
                Some(0xFF) => text.push(0),
                Some(1) => {
                    let text = String::from_utf8(text).map_err(|_| corrupt("text"))?;
                    return Ok((text, &bytes[i + 2..]));
                }
                _ => return Err(corrupt("key text")),
            }
            i += 2;
        } else {
            text.push(bytes[i]);
            i += 1;
        }
    }
    Err(corrupt("key text"))
}

impl Col for (&'static str, u128) {
    type Owned = (String, u128);
    fn lend(owned: &(String, u128)) -> (&str, u128) {
        (owned.0.as_str(), owned.1)
    }
    fn own(value: (&str, u128)) -> (String, u128) {
        (value.0.to_string(), value.1)
    }
    fn encode(value: &(&str, u128)) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.0.len() + 18);
        encode_text_part(value.0, &mut out);
        out.extend_from_slice(&value.1.to_be_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Result<(String, u128), StoreError> {
        let (text, rest) = decode_text_part(bytes)?;
        Ok((text, <u128 as Col>::decode(rest)?))
    }
}

impl Col for (u64, u128) {
    type Owned = (u64, u128);
    fn lend(owned: &(u64, u128)) -> (u64, u128) {
        *owned
    }
    fn own(value: (u64, u128)) -> (u64, u128) {
        value
    }
    fn encode(value: &(u64, u128)) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&value.0.to_be_bytes());
        out.extend_from_slice(&value.1.to_be_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Result<(u64, u128), StoreError> {
        if bytes.len() != 24 {
            return Err(corrupt("key"));
        }
        let (high, low) = bytes.split_at(8);
        Ok((
            u64::from_be_bytes(high.try_into().map_err(|_| corrupt("u64"))?),
            <u128 as Col>::decode(low)?,
        ))
    }
}

impl Col for (&'static str, i64) {
    type Owned = (String, i64);
    fn lend(owned: &(String, i64)) -> (&str, i64) {
        (owned.0.as_str(), owned.1)
    }
    fn own(value: (&str, i64)) -> (String, i64) {
        (value.0.to_string(), value.1)
    }
    fn encode(value: &(&str, i64)) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.0.len() + 10);
        encode_text_part(value.0, &mut out);
        out.extend_from_slice(&<i64 as Col>::encode(&value.1));
        out
    }
    fn decode(bytes: &[u8]) -> Result<(String, i64), StoreError> {
        let (text, rest) = decode_text_part(bytes)?;
        Ok((text, <i64 as Col>::decode(rest)?))
    }
}

impl Col for (i64, &'static str) {
    type Owned = (i64, String);
    fn lend(owned: &(i64, String)) -> (i64, &str) {
        (owned.0, owned.1.as_str())
    }
    fn own(value: (i64, &str)) -> (i64, String) {
        (value.0, value.1.to_string())
    }
    fn encode(value: &(i64, &str)) -> Vec<u8> {
        let mut out = <i64 as Col>::encode(&value.0);
        encode_text_part(value.1, &mut out);
        out
    }
    fn decode(bytes: &[u8]) -> Result<(i64, String), StoreError> {
        if bytes.len() < 8 {
            return Err(corrupt("key"));
        }
        let (number, rest) = bytes.split_at(8);
        Ok((<i64 as Col>::decode(number)?, decode_text_part(rest)?.0))
    }
}

/// One row as the caller gets it: owned, whichever backend read it.
pub type Row<K, V> = (<K as Col>::Owned, <V as Col>::Owned);
pub type Rows<'t, K, V> = Box<dyn Iterator<Item = Result<Row<K, V>, StoreError>> + 't>;

/// A read transaction: one consistent snapshot.
pub enum ReadTxn<'a> {
    Redb(&'a redb::ReadTransaction),
    Pg(&'a PgTxn),
}

/// A write transaction: committed when the closure that got it returns Ok. Write
/// transactions run one at a time (redb has one writer; PostgreSQL takes a lock first).
pub enum WriteTxn<'a> {
    Redb(&'a redb::WriteTransaction),
    Pg(&'a PgTxn),
}

impl<'a> ReadTxn<'a> {
    pub fn open_table<K: Col + redb::Key, V: Col>(
        &self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<Table<'a, K, V>, StoreError> {
        Ok(Table {
            inner: match self {
                ReadTxn::Redb(txn) => Inner::RedbRead(txn.open_table(table)?),
                ReadTxn::Pg(txn) => Inner::Pg(PgTable::new(txn, table.name())),
            },
        })
    }
}

impl<'a> WriteTxn<'a> {
    /// Removes a table and every row in it (on PostgreSQL the rows; its SQL table stays).
    pub fn drop_table<K: Col + redb::Key, V: Col>(
        &self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        match self {
            WriteTxn::Redb(txn) => {
                txn.delete_table(table)?;
            }
            WriteTxn::Pg(txn) => txn.clear(super::postgres::table_name(table.name()))?,
        }
        Ok(())
    }

    pub fn open_table<K: Col + redb::Key, V: Col>(
        &self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<Table<'a, K, V>, StoreError> {
        Ok(Table {
            inner: match self {
                WriteTxn::Redb(txn) => Inner::RedbWrite(txn.open_table(table)?),
                WriteTxn::Pg(txn) => Inner::Pg(PgTable::new(txn, table.name())),
            },
        })
    }
}

/// One table inside a transaction.
pub struct Table<'t, K: Col + redb::Key, V: Col> {
    inner: Inner<'t, K, V>,
}

enum Inner<'t, K: Col + redb::Key, V: Col> {
    RedbRead(redb::ReadOnlyTable<K, V>),
    RedbWrite(redb::Table<'t, K, V>),
    Pg(PgTable<'t, K, V>),
}

impl<'t, K: Col + redb::Key, V: Col> Table<'t, K, V> {
    pub fn get(&self, key: K::SelfType<'_>) -> Result<Option<V::Owned>, StoreError> {
        Ok(match &self.inner {
            Inner::RedbRead(t) => t.get(key)?.map(|v| V::own(v.value())),
            Inner::RedbWrite(t) => t.get(key)?.map(|v| V::own(v.value())),
            Inner::Pg(t) => t.get(&K::encode(&key))?,
        })
    }

    /// Whether `key` has a row.
    pub fn contains(&self, key: K::SelfType<'_>) -> Result<bool, StoreError> {
        Ok(match &self.inner {
            Inner::RedbRead(t) => t.get(key)?.is_some(),
            Inner::RedbWrite(t) => t.get(key)?.is_some(),
            Inner::Pg(t) => t.contains(&K::encode(&key))?,
        })
    }

    /// Every row, in key order.
    pub fn iter(&self) -> Result<Rows<'_, K, V>, StoreError> {
        Ok(match &self.inner {
            Inner::RedbRead(t) => Box::new(t.iter()?.map(own_row::<K, V>)),
            Inner::RedbWrite(t) => Box::new(t.iter()?.map(own_row::<K, V>)),
            Inner::Pg(t) => Box::new(t.scan(None, None, false)),
        })
    }

    /// Rows with `from <= key < to`, in key order, or newest (highest) first when `reverse`.
    pub fn range<'k>(
        &self,
        from: K::SelfType<'k>,
        to: K::SelfType<'k>,
        reverse: bool,
    ) -> Result<Rows<'_, K, V>, StoreError> {
        // An inverted or empty range holds nothing (redb would refuse it).
        if K::compare(K::as_bytes(&from).as_ref(), K::as_bytes(&to).as_ref()) != std::cmp::Ordering::Less {
            return Ok(Box::new(std::iter::empty()));
        }
        macro_rules! redb_range {
            ($t:expr) => {{
                let range = $t.range(from..to)?;
                if reverse {
                    Box::new(range.rev().map(own_row::<K, V>)) as Rows<'_, K, V>
                } else {
                    Box::new(range.map(own_row::<K, V>))
                }
            }};
        }
        Ok(match &self.inner {
            Inner::RedbRead(t) => redb_range!(t),
            Inner::RedbWrite(t) => redb_range!(t),
            Inner::Pg(t) => Box::new(t.scan(Some(K::encode(&from)), Some(K::encode(&to)), reverse)),
        })
    }

    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(match &self.inner {
            Inner::RedbRead(t) => t.len()?,
            Inner::RedbWrite(t) => t.len()?,
            Inner::Pg(t) => t.len()?,
        })
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Inserts or replaces a row. Only a table opened in a write transaction can.
    pub fn insert(&mut self, key: K::SelfType<'_>, value: V::SelfType<'_>) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::RedbRead(_) => return Err(read_only()),
            Inner::RedbWrite(t) => {
                t.insert(key, value)?;
            }
            Inner::Pg(t) => t.insert(&K::encode(&key), &V::encode(&value))?,
        }
        Ok(())
    }

    /// On PostgreSQL, sends the upserts held back so far (they are otherwise kept until the
    /// table is read or the transaction commits): a bulk write calls it every few thousand
    /// rows so that it does not hold them all in memory. Nothing to do on redb.
    pub fn send_pending(&self) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Pg(t) => t.txn.flush(t.name),
            Inner::RedbRead(_) | Inner::RedbWrite(_) => Ok(()),
        }
    }

    /// Removes a row, returning what it held.
    pub fn remove(&mut self, key: K::SelfType<'_>) -> Result<Option<V::Owned>, StoreError> {
        Ok(match &mut self.inner {
            Inner::RedbRead(_) => return Err(read_only()),
            Inner::RedbWrite(t) => t.remove(key)?.map(|v| V::own(v.value())),
            Inner::Pg(t) => t.remove(&K::encode(&key))?,
        })
    }
}

fn read_only() -> StoreError {
    StoreError::Task("a write was attempted in a read transaction".into())
}

type RedbEntry<'a, K, V> = Result<(redb::AccessGuard<'a, K>, redb::AccessGuard<'a, V>), redb::StorageError>;

fn own_row<K: Col + redb::Key, V: Col>(entry: RedbEntry<'_, K, V>) -> Result<Row<K, V>, StoreError> {
    let (key, value) = entry?;
    Ok((K::own(key.value()), V::own(value.value())))
}

/// A table on PostgreSQL: `auxot_<name>`, bound to the transaction's connection.
pub struct PgTable<'t, K, V> {
    txn: &'t PgTxn,
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<'t, K: Col + redb::Key, V: Col> PgTable<'t, K, V> {
    fn new(txn: &'t PgTxn, name: &str) -> Self {
        PgTable {
            txn,
            name: super::postgres::table_name(name),
            types: PhantomData,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<V::Owned>, StoreError> {
        match self.txn.get(self.name, key)? {
            Some(bytes) => Ok(Some(V::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.txn.get(self.name, key)?.is_some())
    }

    fn len(&self) -> Result<u64, StoreError> {
        self.txn.count(self.name)
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.txn.upsert(self.name, key, value)
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<V::Owned>, StoreError> {
        match self.txn.delete(self.name, key)? {
            Some(bytes) => Ok(Some(V::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Pages through `[from, to)` by key, a page per round trip, so an early `break` (a
    /// full request-log page) reads no further.
    fn scan(&self, from: Option<Vec<u8>>, to: Option<Vec<u8>>, reverse: bool) -> PgScan<'t, K, V> {
        PgScan {
            txn: self.txn,
            name: self.name,
            from,
            to,
            reverse,
            page: std::collections::VecDeque::new(),
            done: false,
            types: PhantomData,
        }
    }
}

pub struct PgScan<'t, K, V> {
    txn: &'t PgTxn,
    name: &'static str,
    /// The bounds still to read; moved past each page as it is fetched.
    from: Option<Vec<u8>>,
    to: Option<Vec<u8>>,
    reverse: bool,
    page: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
    types: PhantomData<fn() -> (K, V)>,
}

/// Rows fetched per round trip of a scan.
const SCAN_PAGE: i64 = 256;

impl<K: Col + redb::Key, V: Col> Iterator for PgScan<'_, K, V> {
    type Item = Result<Row<K, V>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            match self.txn.scan(
                self.name,
                self.from.as_deref(),
                self.to.as_deref(),
                self.reverse,
                SCAN_PAGE,
            ) {
                Ok((rows, exhausted)) => {
                    // The next page starts just past the last key read: exclusive lower bound
                    // going up is the key plus a zero byte (the smallest key after it); going
                    // down, the exclusive upper bound is the key itself.
                    if let Some((last, _)) = rows.last() {
                        if self.reverse {
                            self.to = Some(last.clone());
                        } else {
                            let mut next = last.clone();
                            next.push(0);
                            self.from = Some(next);
                        }
                    }
                    self.done = exhausted;
                    self.page.extend(rows);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let (key, value) = self.page.pop_front()?;
        Some(K::decode(&key).and_then(|k| Ok((k, V::decode(&value)?))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoded_text_and_number_keys_sort_as_redb_sorts_them(
            a in "[a\\x00-\\x02z]{0,6}", b in "[a\\x00-\\x02z]{0,6}", x in any::<u128>(), y in any::<u128>(),
        ) {
            let ea = <(&str, u128) as Col>::encode(&(a.as_str(), x));
            let eb = <(&str, u128) as Col>::encode(&(b.as_str(), y));
            prop_assert_eq!(ea.cmp(&eb), (a.as_str(), x).cmp(&(b.as_str(), y)));
            prop_assert_eq!(<(&str, u128) as Col>::decode(&ea).unwrap(), (a.clone(), x));
        }

        #[test]
        fn encoded_signed_keys_sort_numerically(a in any::<i64>(), b in any::<i64>(), s in "[a-c\\x00]{0,4}") {
            let ea = <(i64, &str) as Col>::encode(&(a, s.as_str()));
            let eb = <(i64, &str) as Col>::encode(&(b, s.as_str()));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert_eq!(<(i64, &str) as Col>::decode(&ea).unwrap(), (a, s.clone()));
            let sa = <(&str, i64) as Col>::encode(&(s.as_str(), a));
            prop_assert_eq!(<(&str, i64) as Col>::decode(&sa).unwrap(), (s.clone(), a));
        }
    }
}

//! Where the engine keeps its state between windows: per-group aggregate
//! states, and for reports with joins the current rows of the tables they
//! read, with secondary indexes on the join columns.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

/// A secondary index the engine needs on the stored rows of a table: rows
/// are found by the (normalized) value of `column`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowIndex {
    pub table: String,
    /// Lower-case column name.
    pub column: String,
}

/// One entry of a row in a secondary index: the row is found under
/// (`column`, `value`). `value` is the engine's normalized text of the
/// column's value (equal under SQL `=` ⇒ equal text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexEntry {
    pub column: String,
    pub value: String,
}

/// Storage of the engine's state. window-compute backs it with SQLite per
/// partition; tests use [`MemoryStateStore`]. Every call of
/// [`crate::Engine::apply`] runs inside one store transaction of the caller.
///
/// Groups: one blob per (report, group key); the engine reads each touched
/// group once per call and writes it once at the end. The sub-aggregates of
/// a rolled-up dimension are stored as groups too, under the report name
/// `{report}/{table}` (see [`crate::Engine`]), and so are the chunks of
/// large MIN, MAX and COUNT(DISTINCT) multisets, under `{name}#values`
/// (see [`crate::ChunkSizes`]).
///
/// Rows (only for the tables of reports with joins, see
/// [`crate::Engine::row_tables`]): one blob per (table, primary key text),
/// findable through the index entries given with it (see
/// [`crate::Engine::required_indexes`]). The engine writes rows through as
/// changes are applied and reads them back within the same call.
pub trait StateStore {
    type Error: std::error::Error + Send + Sync + 'static;
    /// The stored state of one group, `None` if the group does not exist.
    fn load_group(&mut self, report: &str, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Replaces the state of one group; `None` deletes it.
    fn store_group(
        &mut self,
        report: &str,
        key: &str,
        state: Option<&[u8]>,
    ) -> Result<(), Self::Error>;
    /// Every group of `report` (used when a table is re-snapshotted).
    fn groups_of(&mut self, report: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error>;
    /// The groups of `report` whose key starts with `prefix`, in ascending
    /// key order (the sub-aggregates of one join key of a rolled-up
    /// dimension).
    fn groups_with_prefix(
        &mut self,
        report: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Self::Error>;
    /// The stored image of one row, `None` if the row does not exist.
    fn load_row(&mut self, table: &str, pk: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Replaces the stored image of one row and all its index entries with
    /// `row` (image, entries); `None` deletes the row and its entries.
    fn store_row(
        &mut self,
        table: &str,
        pk: &str,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Self::Error>;
    /// [`StateStore::store_row`] for a caller that knows what is stored:
    /// `stored` is `None` when the row is not stored, else its index entries
    /// as last written. A store may then write only the entries that
    /// differ; the default ignores the hint.
    fn replace_row(
        &mut self,
        table: &str,
        pk: &str,
        stored: Option<&[IndexEntry]>,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Self::Error> {
        let _ = stored;
        self.store_row(table, pk, row)
    }
    /// Primary keys of the rows of `table` indexed under (`column`,
    /// `value`), in ascending order.
    fn lookup_rows(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<String>, Self::Error>;
    /// Every stored row of `table` (primary key, image), in ascending key
    /// order (used when a table is re-snapshotted).
    fn rows_of(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error>;
}

/// A stored row and its index entries.
type StoredRow = (Vec<u8>, Vec<IndexEntry>);

/// An in-memory [`StateStore`] (tests, tools, rebuilding state in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStateStore {
    groups: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    rows: BTreeMap<String, BTreeMap<String, StoredRow>>,
    /// (table, column, value) → primary keys.
    index: BTreeMap<(String, String, String), BTreeSet<String>>,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of groups stored for `report`.
    pub fn group_count(&self, report: &str) -> usize {
        self.groups.get(report).map_or(0, BTreeMap::len)
    }

    /// Number of rows stored for `table`.
    pub fn row_count(&self, table: &str) -> usize {
        self.rows.get(table).map_or(0, BTreeMap::len)
    }

    /// Total bytes of state held (keys, blobs, rows and index entries).
    pub fn size_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .iter()
            .map(|(r, g)| r.len() + g.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
            .sum();
        let rows: usize = self
            .rows
            .iter()
            .map(|(t, rows)| {
                t.len()
                    + rows
                        .iter()
                        .map(|(pk, (row, _))| pk.len() + row.len())
                        .sum::<usize>()
            })
            .sum();
        let index: usize = self
            .index
            .iter()
            .map(|((t, c, v), pks)| {
                t.len() + c.len() + v.len() + pks.iter().map(String::len).sum::<usize>()
            })
            .sum();
        groups + rows + index
    }

    fn unindex(&mut self, table: &str, pk: &str, entries: &[IndexEntry]) {
        for e in entries {
            let k = (table.to_string(), e.column.clone(), e.value.clone());
            if let Some(pks) = self.index.get_mut(&k) {
                pks.remove(pk);
                if pks.is_empty() {
                    self.index.remove(&k);
                }
            }
        }
    }
}

impl StateStore for MemoryStateStore {
    type Error = Infallible;

    fn load_group(&mut self, report: &str, key: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.groups.get(report).and_then(|g| g.get(key)).cloned())
    }

    fn store_group(
        &mut self,
        report: &str,
        key: &str,
        state: Option<&[u8]>,
    ) -> Result<(), Infallible> {
        match state {
            Some(bytes) => {
                self.groups
                    .entry(report.to_string())
                    .or_default()
                    .insert(key.to_string(), bytes.to_vec());
            }
            None => {
                if let Some(g) = self.groups.get_mut(report) {
                    g.remove(key);
                    if g.is_empty() {
                        self.groups.remove(report);
                    }
                }
            }
        }
        Ok(())
    }

    fn groups_of(&mut self, report: &str) -> Result<Vec<(String, Vec<u8>)>, Infallible> {
        Ok(self
            .groups
            .get(report)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn groups_with_prefix(
        &mut self,
        report: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Infallible> {
        Ok(self
            .groups
            .get(report)
            .map(|g| {
                g.range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
            })
            .unwrap_or_default())
    }

    fn load_row(&mut self, table: &str, pk: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self
            .rows
            .get(table)
            .and_then(|t| t.get(pk))
            .map(|(row, _)| row.clone()))
    }

    fn store_row(
        &mut self,
        table: &str,
        pk: &str,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Infallible> {
        let old = self.rows.get_mut(table).and_then(|t| t.remove(pk));
        if let Some((_, entries)) = old {
            self.unindex(table, pk, &entries);
        }
        match row {
            Some((image, entries)) => {
                for e in entries {
                    self.index
                        .entry((table.to_string(), e.column.clone(), e.value.clone()))
                        .or_default()
                        .insert(pk.to_string());
                }
                self.rows
                    .entry(table.to_string())
                    .or_default()
                    .insert(pk.to_string(), (image.to_vec(), entries.to_vec()));
            }
            None => {
                if self.rows.get(table).is_some_and(BTreeMap::is_empty) {
                    self.rows.remove(table);
                }
            }
        }
        Ok(())
    }

    fn lookup_rows(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<String>, Infallible> {
        Ok(self
            .index
            .get(&(table.to_string(), column.to_string(), value.to_string()))
            .map(|pks| pks.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn rows_of(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, Infallible> {
        Ok(self
            .rows
            .get(table)
            .map(|t| {
                t.iter()
                    .map(|(pk, (row, _))| (pk.clone(), row.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl<S: StateStore + ?Sized> StateStore for &mut S {
    type Error = S::Error;
    fn load_group(&mut self, report: &str, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        (**self).load_group(report, key)
    }
    fn store_group(
        &mut self,
        report: &str,
        key: &str,
        state: Option<&[u8]>,
    ) -> Result<(), Self::Error> {
        (**self).store_group(report, key, state)
    }
    fn groups_of(&mut self, report: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error> {
        (**self).groups_of(report)
    }
    fn groups_with_prefix(
        &mut self,
        report: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Self::Error> {
        (**self).groups_with_prefix(report, prefix)
    }
    fn load_row(&mut self, table: &str, pk: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        (**self).load_row(table, pk)
    }
    fn store_row(
        &mut self,
        table: &str,
        pk: &str,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Self::Error> {
        (**self).store_row(table, pk, row)
    }
    fn replace_row(
        &mut self,
        table: &str,
        pk: &str,
        stored: Option<&[IndexEntry]>,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Self::Error> {
        (**self).replace_row(table, pk, stored, row)
    }
    fn lookup_rows(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<String>, Self::Error> {
        (**self).lookup_rows(table, column, value)
    }
    fn rows_of(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error> {
        (**self).rows_of(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(column: &str, value: &str) -> IndexEntry {
        IndexEntry {
            column: column.into(),
            value: value.into(),
        }
    }

    #[test]
    fn rows_are_found_through_their_current_index_entries() {
        let mut st = MemoryStateStore::new();
        let e1 = [entry("order_id", "n:7"), entry("id", "n:1")];
        st.store_row("items", "1", Some((b"a", &e1))).unwrap_or(());
        st.store_row("items", "2", Some((b"b", &[entry("order_id", "n:7")])))
            .unwrap_or(());
        let found = st
            .lookup_rows("items", "order_id", "n:7")
            .unwrap_or_default();
        assert_eq!(found, ["1", "2"]);
        // Moving row 1 to order 8 removes its old entry.
        st.store_row("items", "1", Some((b"a2", &[entry("order_id", "n:8")])))
            .unwrap_or(());
        assert_eq!(
            st.lookup_rows("items", "order_id", "n:7")
                .unwrap_or_default(),
            ["2"]
        );
        assert_eq!(
            st.lookup_rows("items", "order_id", "n:8")
                .unwrap_or_default(),
            ["1"]
        );
        assert!(st
            .lookup_rows("items", "id", "n:1")
            .unwrap_or_default()
            .is_empty());
        assert_eq!(
            st.load_row("items", "1").unwrap_or_default(),
            Some(b"a2".to_vec())
        );
        assert_eq!(
            st.rows_of("items").unwrap_or_default(),
            [
                ("1".to_string(), b"a2".to_vec()),
                ("2".to_string(), b"b".to_vec())
            ]
        );
        assert_eq!(st.row_count("items"), 2);
        st.store_row("items", "1", None).unwrap_or(());
        st.store_row("items", "2", None).unwrap_or(());
        st.store_row("items", "3", None).unwrap_or(());
        assert_eq!(st.row_count("items"), 0);
        assert_eq!(st.size_bytes(), 0);
    }
}

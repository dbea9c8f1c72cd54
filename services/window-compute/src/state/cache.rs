//! Committed state blobs of one partition kept in memory across windows, so
//! that the groups and rows of busy merchants are not read back from SQLite
//! by every window.
//!
//! The cache holds only what is committed: values a computation read from
//! SQLite (which, for a key it has not written, is the committed value), and
//! what it wrote once its transaction has committed. A computation that
//! fails leaves the cache as it was. Writes that do not go through
//! [`PartitionState::compute`](super::PartitionState::compute) empty it:
//! another connection's commit (another replica taking the partition over)
//! is seen through `PRAGMA data_version`, and a transaction opened with
//! [`PartitionState::begin`](super::PartitionState::begin) clears it.

use std::collections::HashMap;

/// Bytes of blobs held per partition before the cache starts over. Bounds
/// the memory of a replica: partitions × this (16 MiB each, 128 MiB for 8).
pub(crate) const CACHE_BYTES: usize = 16 << 20;

/// A cache key: kind (`g` group, `r` row), namespace (report or table) and
/// key, separated by NUL (which names do not contain).
pub(crate) fn group_key(report: &str, key: &str) -> String {
    entry_key('g', report, key)
}

pub(crate) fn row_key(table: &str, pk: &str) -> String {
    entry_key('r', table, pk)
}

fn entry_key(kind: char, ns: &str, key: &str) -> String {
    let mut k = String::with_capacity(ns.len() + key.len() + 3);
    k.push(kind);
    k.push('\0');
    k.push_str(ns);
    k.push('\0');
    k.push_str(key);
    k
}

/// Blobs by cache key; `None`: known absent.
pub(crate) type Blobs = HashMap<String, Option<Vec<u8>>>;

#[derive(Debug, Default)]
pub(crate) struct BlobCache {
    entries: Blobs,
    bytes: usize,
    /// `PRAGMA data_version` of the connection when last checked.
    data_version: Option<i64>,
    limit: usize,
}

/// What one computation learned: committed values it read, and its writes.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    pub read: Blobs,
    pub written: Blobs,
}

impl BlobCache {
    pub fn new(limit: usize) -> Self {
        BlobCache {
            limit,
            ..Self::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&Option<Vec<u8>>> {
        self.entries.get(key)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Empties the cache when the database changed through another
    /// connection since the last check.
    pub fn check_version(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.clear();
            self.data_version = Some(data_version);
        }
    }

    /// Takes in what a committed computation read and wrote (its writes
    /// win). Over the byte limit the cache starts over with just that.
    pub fn absorb(&mut self, learned: Learned) {
        for (k, v) in learned.read.into_iter().chain(learned.written) {
            self.put(k, v);
        }
        if self.bytes > self.limit {
            self.clear();
        }
    }

    fn put(&mut self, k: String, v: Option<Vec<u8>>) {
        let size = |k: usize, v: &Option<Vec<u8>>| k + v.as_ref().map_or(0, Vec::len) + 32;
        let klen = k.len();
        self.bytes += size(klen, &v);
        if let Some(old) = self.entries.insert(k, v) {
            self.bytes = self.bytes.saturating_sub(size(klen, &old));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_win_over_reads_and_the_limit_starts_over() {
        let mut c = BlobCache::new(200);
        let k = group_key("r", "a");
        let mut learned = Learned::default();
        learned.read.insert(k.clone(), Some(vec![1]));
        learned.written.insert(k.clone(), Some(vec![2]));
        learned.read.insert(row_key("t", "1"), None);
        c.absorb(learned);
        assert_eq!(c.get(&k), Some(&Some(vec![2])));
        assert_eq!(c.get(&row_key("t", "1")), Some(&None));
        assert_eq!(c.get(&group_key("t", "1")), None);
        let mut big = Learned::default();
        big.written.insert(group_key("r", "b"), Some(vec![0; 300]));
        c.absorb(big);
        assert_eq!(c.len(), 0);
        c.check_version(3);
        c.absorb(Learned {
            read: Blobs::from([(k.clone(), Some(vec![4]))]),
            written: Blobs::new(),
        });
        c.check_version(3);
        assert_eq!(c.get(&k), Some(&Some(vec![4])));
        c.check_version(4);
        assert_eq!(c.get(&k), None);
    }
}

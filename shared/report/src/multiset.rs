//! The value → count multiset of MIN, MAX and COUNT(DISTINCT), and how a
//! large one is kept in chunks.
//!
//! A small multiset lives inline in its group's blob. Once it grows past
//! [`ChunkSizes::spill_above`] entries, its entries move to chunk blobs of
//! at most [`ChunkSizes::chunk_max`] entries each (see [`crate::spill`]), and the group's blob
//! keeps only a directory: per chunk, the smallest value it may hold, its
//! id and its number of entries. A window then reads and rewrites only the
//! chunks holding the values it changes (plus the first or last chunk for
//! MIN or MAX), not the whole multiset.
//!
//! Chunk `i` holds the values from its `lower` bound (inclusive) up to the
//! next chunk's bound (exclusive); the first chunk also holds everything
//! below its bound. Stored chunks are never empty.

use crate::agg::OrdValue;
use std::collections::BTreeMap;

/// When the MIN, MAX and COUNT(DISTINCT) multisets of a group are stored
/// in chunks ([`crate::Engine::with_chunk_sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    /// An inline multiset with more entries than this is stored in chunks.
    pub spill_above: usize,
    /// A chunked multiset with at most this many entries goes back inline
    /// (less than `spill_above`, so that a multiset near the limit does not
    /// move back and forth).
    pub inline_at_most: usize,
    /// A chunk with more entries than this is split.
    pub chunk_max: usize,
    /// Entries per chunk when a multiset or an overfull chunk is split (at
    /// most `chunk_max`).
    pub chunk_fill: usize,
    /// From this many chunks of one multiset to read at once (and at least
    /// half of those not read yet), one range read of all its chunks
    /// replaces the reads one by one.
    pub range_read_from: usize,
}

impl Default for ChunkSizes {
    /// Chunks of 64 to 128 values: a window that changes a few values of a
    /// large multiset reads and writes a few small blobs.
    fn default() -> Self {
        ChunkSizes {
            spill_above: 256,
            inline_at_most: 64,
            chunk_max: 128,
            chunk_fill: 64,
            range_read_from: 8,
        }
    }
}

impl ChunkSizes {
    /// The sizes with their constraints applied (at least one entry per
    /// chunk, `chunk_fill` ≤ `chunk_max`, `inline_at_most` < `spill_above`).
    pub fn checked(self) -> Self {
        let chunk_max = self.chunk_max.max(1);
        let spill_above = self.spill_above.max(1);
        ChunkSizes {
            spill_above,
            inline_at_most: self.inline_at_most.min(spill_above - 1),
            chunk_max,
            chunk_fill: self.chunk_fill.clamp(1, chunk_max),
            range_read_from: self.range_read_from.max(1),
        }
    }
}

/// Value → Σw, zero entries removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Multiset {
    /// Every entry of an inline multiset; empty when it is stored in chunks.
    pub map: BTreeMap<OrdValue, i64>,
    /// The chunk directory of a multiset stored in chunks.
    pub chunks: Option<Chunks>,
}

/// The directory of a multiset stored in chunks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunks {
    /// In value order; never empty.
    pub dir: Vec<Chunk>,
    /// The id the next new chunk gets.
    pub next_id: u64,
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    /// The smallest value the chunk holds (the first chunk holds smaller
    /// values too).
    pub lower: OrdValue,
    pub id: u64,
    /// Entries stored in the chunk.
    pub len: u64,
    /// The chunk once read in this call.
    pub loaded: Option<Loaded>,
}

/// A chunk read in this call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Loaded {
    /// The bytes as stored (a chunk is rewritten only when they change).
    pub bytes: Vec<u8>,
    /// Its entries, with this call's changes.
    pub map: BTreeMap<OrdValue, i64>,
}

impl Multiset {
    /// Number of distinct values held (stored and changed in this call).
    pub(crate) fn len(&self) -> u64 {
        let chunked: u64 = self.chunks.as_ref().map_or(0, |c| {
            c.dir
                .iter()
                .map(|ch| ch.loaded.as_ref().map_or(ch.len, |l| l.map.len() as u64))
                .sum()
        });
        chunked + self.map.len() as u64
    }

    /// Whether no value is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every entry is in memory.
    pub(crate) fn is_complete(&self) -> bool {
        self.chunks
            .as_ref()
            .is_none_or(|c| c.dir.iter().all(|ch| ch.loaded.is_some()))
    }

    /// The index of the chunk that holds `v`.
    fn chunk_of(chunks: &Chunks, v: &OrdValue) -> usize {
        chunks
            .dir
            .partition_point(|ch| ch.lower <= *v)
            .saturating_sub(1)
    }

    /// The chunk that must be read before `v` is folded, if any.
    pub(crate) fn chunk_to_load(&self, v: &OrdValue) -> Option<usize> {
        let chunks = self.chunks.as_ref()?;
        let i = Self::chunk_of(chunks, v);
        chunks.dir.get(i)?.loaded.is_none().then_some(i)
    }

    /// The chunks not read yet.
    pub(crate) fn unloaded(&self) -> Vec<usize> {
        self.chunks.as_ref().map_or_else(Vec::new, |c| {
            (0..c.dir.len())
                .filter(|&i| c.dir[i].loaded.is_none())
                .collect()
        })
    }

    /// The chunk that must be read before the smallest (`max` = false) or
    /// largest value can be taken, if any: the first (last) chunk that is
    /// not read or holds an entry, when it is not read.
    pub(crate) fn extreme_to_load(&self, max: bool) -> Option<usize> {
        let chunks = self.chunks.as_ref()?;
        let n = chunks.dir.len();
        for k in 0..n {
            let i = if max { n - 1 - k } else { k };
            match &chunks.dir[i].loaded {
                None => return Some(i),
                Some(l) if !l.map.is_empty() => return None,
                Some(_) => {}
            }
        }
        None
    }

    /// Makes chunk `i` read: its stored `bytes` and the `entries` decoded
    /// from them (in value order).
    pub(crate) fn add_chunk(&mut self, i: usize, bytes: Vec<u8>, entries: Vec<(OrdValue, i64)>) {
        if let Some(chunk) = self.chunks.as_mut().and_then(|c| c.dir.get_mut(i)) {
            chunk.loaded = Some(Loaded {
                bytes,
                map: entries.into_iter().collect(),
            });
        }
    }

    /// The map `v`'s entry is kept in: the inline map, or its chunk's;
    /// `None` when that chunk has not been read.
    pub(crate) fn map_for(&mut self, v: &OrdValue) -> Option<&mut BTreeMap<OrdValue, i64>> {
        match self.chunks.as_mut() {
            None => Some(&mut self.map),
            Some(chunks) => {
                let i = Self::chunk_of(chunks, v);
                chunks.dir.get_mut(i)?.loaded.as_mut().map(|l| &mut l.map)
            }
        }
    }

    /// The chunks not read yet that hold values of `other`, in order (one
    /// walk of both).
    pub(crate) fn chunks_for(&self, other: &Multiset) -> Vec<usize> {
        let Some(chunks) = self.chunks.as_ref() else {
            return Vec::new();
        };
        let mut out: Vec<usize> = Vec::new();
        let mut i = 0;
        for (v, _) in other.iter() {
            while i + 1 < chunks.dir.len() && chunks.dir[i + 1].lower <= *v {
                i += 1;
            }
            if chunks.dir[i].loaded.is_none() && out.last() != Some(&i) {
                out.push(i);
            }
        }
        out
    }

    /// Adds `sign` × every entry of `other` (all of it in memory), dropping
    /// entries that reach zero, in one walk of both; false when `other` has
    /// chunks not read or an entry falls in a chunk of `self` not read.
    pub(crate) fn add_all(&mut self, other: &Multiset, sign: i64) -> bool {
        if !other.is_complete() {
            return false;
        }
        let Some(chunks) = self.chunks.as_mut() else {
            for (v, w) in other.iter() {
                bump(&mut self.map, v, sign * w);
            }
            return true;
        };
        let mut i = 0;
        for (v, w) in other.iter() {
            while i + 1 < chunks.dir.len() && chunks.dir[i + 1].lower <= *v {
                i += 1;
            }
            let Some(l) = chunks.dir[i].loaded.as_mut() else {
                return false;
            };
            bump(&mut l.map, v, sign * w);
        }
        true
    }

    /// The entries in memory, in value order: all of them unless chunks
    /// are left unread.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&OrdValue, &i64)> {
        self.map.iter().chain(
            self.chunks
                .iter()
                .flat_map(|c| c.dir.iter())
                .filter_map(|ch| ch.loaded.as_ref())
                .flat_map(|l| l.map.iter()),
        )
    }

    /// The smallest value (its chunk read, see [`Self::extreme_to_load`]).
    pub(crate) fn first(&self) -> Option<&OrdValue> {
        self.iter().next().map(|(v, _)| v)
    }

    /// The largest value (its chunk read, see [`Self::extreme_to_load`]).
    pub(crate) fn last(&self) -> Option<&OrdValue> {
        match &self.chunks {
            None => self.map.keys().next_back(),
            Some(c) => c
                .dir
                .iter()
                .rev()
                .filter_map(|ch| ch.loaded.as_ref())
                .find_map(|l| l.map.keys().next_back()),
        }
    }
}

/// Adds `d` to `v`'s entry, removing it at zero.
fn bump(map: &mut BTreeMap<OrdValue, i64>, v: &OrdValue, d: i64) {
    match map.get_mut(v) {
        Some(e) => {
            *e += d;
            if *e == 0 {
                map.remove(v);
            }
        }
        None if d != 0 => {
            map.insert(v.clone(), d);
        }
        None => {}
    }
}

/// `entries` cut into pieces of about `fill` entries when there are more
/// than `max`; one piece otherwise.
pub(crate) fn pieces<T>(entries: Vec<T>, max: usize, fill: usize) -> Vec<Vec<T>> {
    if entries.len() <= max {
        return vec![entries];
    }
    let n = entries.len().div_ceil(fill.max(1));
    // Spread evenly so no piece is tiny.
    let base = entries.len() / n;
    let extra = entries.len() % n;
    let mut out = Vec::with_capacity(n);
    let mut it = entries.into_iter();
    for k in 0..n {
        let take = base + usize::from(k < extra);
        out.push(it.by_ref().take(take).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::Datum;

    fn v(i: i64) -> OrdValue {
        OrdValue(Datum::Int(i))
    }

    fn chunked(bounds: &[(i64, u64)]) -> Multiset {
        Multiset {
            map: BTreeMap::new(),
            chunks: Some(Chunks {
                dir: bounds
                    .iter()
                    .enumerate()
                    .map(|(id, &(lower, len))| Chunk {
                        lower: v(lower),
                        id: id as u64,
                        len,
                        loaded: None,
                    })
                    .collect(),
                next_id: bounds.len() as u64,
            }),
        }
    }

    #[test]
    fn values_map_to_the_chunk_whose_range_holds_them() {
        let m = chunked(&[(10, 3), (20, 3), (30, 3)]);
        assert_eq!(m.chunk_to_load(&v(5)), Some(0));
        assert_eq!(m.chunk_to_load(&v(10)), Some(0));
        assert_eq!(m.chunk_to_load(&v(19)), Some(0));
        assert_eq!(m.chunk_to_load(&v(20)), Some(1));
        assert_eq!(m.chunk_to_load(&v(99)), Some(2));
        assert_eq!(m.len(), 9);
        assert!(!m.is_complete());
    }

    #[test]
    fn extremes_need_the_first_chunk_that_still_holds_values() {
        let mut m = chunked(&[(10, 2), (20, 2), (30, 2)]);
        assert_eq!(m.extreme_to_load(false), Some(0));
        assert_eq!(m.extreme_to_load(true), Some(2));
        m.add_chunk(0, vec![1], vec![(v(10), 1), (v(12), 1)]);
        assert_eq!(m.extreme_to_load(false), None);
        assert_eq!(m.len(), 6);
        // The first chunk's values all leave: the minimum is in chunk 1.
        for x in [10, 12] {
            if let Some(map) = m.map_for(&v(x)) {
                map.remove(&v(x));
            }
        }
        assert_eq!(m.extreme_to_load(false), Some(1));
        m.add_chunk(1, vec![2], vec![(v(21), 1), (v(25), 2)]);
        assert_eq!(m.extreme_to_load(false), None);
        assert_eq!(m.first(), Some(&v(21)));
        assert_eq!(m.len(), 4);
        // A value of a chunk not read has no map to go to.
        assert!(m.map_for(&v(31)).is_none());
        m.add_chunk(2, vec![3], vec![(v(30), 1), (v(33), 1)]);
        assert_eq!(m.last(), Some(&v(33)));
        assert!(m.is_complete());
        let all: Vec<i64> = m
            .iter()
            .filter_map(|(x, _)| match x.0 {
                Datum::Int(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(all, [21, 25, 30, 33]);
    }

    #[test]
    fn pieces_are_even_and_bounded() {
        let p = pieces((0..300).collect::<Vec<_>>(), 128, 64);
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(|x| x.len() == 60));
        assert_eq!(p.concat(), (0..300).collect::<Vec<_>>());
        assert_eq!(pieces(vec![1, 2], 128, 64), vec![vec![1, 2]]);
        let p = pieces((0..7).collect::<Vec<_>>(), 2, 2);
        assert_eq!(p, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6]]);
    }
}

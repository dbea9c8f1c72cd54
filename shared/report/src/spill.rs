//! Reading and writing the chunks of multisets stored in chunks (see
//! [`crate::multiset`]).
//!
//! The chunks of a group stored under (`ns`, `key`) are groups of their own
//! under (`{ns}#values`, `{key}␟{accumulator}␟{chunk id}`). The engine reads
//! a chunk before it folds a value the chunk holds, before it adds a whole
//! sub-aggregate, and, for MIN and MAX, before it reads the result; all
//! other chunks stay on disk. When the call ends, [`At::write_group`] rewrites
//! the chunks that changed (splitting overfull ones, dropping empty ones),
//! moves a grown multiset into chunks or a shrunk one back inline, writes
//! the group's own blob and deletes the chunks no longer in use.

use crate::agg::{multiset_key, AccState, AggKind, AggSpec, GroupState};
use crate::codec;
use crate::datum::Datum;
use crate::engine::store_err;
use crate::error::EngineError;
use crate::multiset::{pieces, Chunk, ChunkSizes, Chunks, Loaded, Multiset};
use crate::store::StateStore;
use std::collections::{BTreeSet, HashMap};

/// Where the chunks of the groups stored under namespace `ns` are kept.
fn chunk_namespace(ns: &str) -> String {
    format!("{ns}#values")
}

fn chunk_key(key: &str, acc: usize, id: u64) -> String {
    format!("{key}\u{1f}{acc}\u{1f}{id}")
}

/// The group (`ns`, `key`) a chunk operation is for.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub ns: &'a str,
    pub key: &'a str,
    pub sizes: &'a ChunkSizes,
}

impl At<'_> {
    fn corrupt(&self, reason: String) -> EngineError {
        EngineError::CorruptState {
            report: self.ns.to_string(),
            key: self.key.to_string(),
            reason,
        }
    }

    /// Reads chunk `i` of the multiset of accumulator `acc`.
    fn load<S: StateStore>(
        &self,
        store: &mut S,
        acc: usize,
        m: &mut Multiset,
        i: usize,
    ) -> Result<(), EngineError> {
        let Some(id) = m.chunks.as_ref().and_then(|c| c.dir.get(i)).map(|c| c.id) else {
            return Ok(());
        };
        let bytes = store
            .load_group(&chunk_namespace(self.ns), &chunk_key(self.key, acc, id))
            .map_err(store_err("load_group"))?
            .ok_or_else(|| self.corrupt(format!("chunk {id} of accumulator {acc} is missing")))?;
        let entries = codec::decode_chunk(&bytes)
            .map_err(|e| self.corrupt(format!("chunk {id} of accumulator {acc}: {e}")))?;
        m.add_chunk(i, bytes, entries);
        Ok(())
    }

    /// Reads chunks `wanted` (not read yet) of the multiset of accumulator
    /// `acc`: one by one, or when they are many, every chunk of the
    /// multiset with one range read.
    fn load_many<S: StateStore>(
        &self,
        store: &mut S,
        acc: usize,
        m: &mut Multiset,
        wanted: Vec<usize>,
    ) -> Result<(), EngineError> {
        // A range read returns every chunk: worth it when most are wanted.
        if wanted.len() < self.sizes.range_read_from || 2 * wanted.len() < m.unloaded().len() {
            for i in wanted {
                self.load(store, acc, m, i)?;
            }
            return Ok(());
        }
        let Some(chunks) = m.chunks.as_ref() else {
            return Ok(());
        };
        let by_id: HashMap<u64, usize> = wanted.iter().map(|&i| (chunks.dir[i].id, i)).collect();
        let prefix = chunk_key(self.key, acc, 0);
        let prefix = &prefix[..prefix.len() - 1];
        let stored = store
            .groups_with_prefix(&chunk_namespace(self.ns), prefix)
            .map_err(store_err("groups_with_prefix"))?;
        let mut found = 0;
        for (key, bytes) in stored {
            let Some(&i) = key[prefix.len()..]
                .parse::<u64>()
                .ok()
                .and_then(|id| by_id.get(&id))
            else {
                continue;
            };
            let entries = codec::decode_chunk(&bytes).map_err(|e| {
                self.corrupt(format!(
                    "chunk {} of accumulator {acc}: {e}",
                    &key[prefix.len()..]
                ))
            })?;
            m.add_chunk(i, bytes, entries);
            found += 1;
        }
        if found != by_id.len() {
            return Err(self.corrupt(format!(
                "{} chunks of accumulator {acc} are missing",
                by_id.len() - found
            )));
        }
        Ok(())
    }

    /// Reads every chunk of `m` not read yet.
    fn load_all_of<S: StateStore>(
        &self,
        store: &mut S,
        acc: usize,
        m: &mut Multiset,
    ) -> Result<(), EngineError> {
        let wanted = m.unloaded();
        self.load_many(store, acc, m, wanted)
    }

    /// Reads the chunks holding the values of `args` (one per aggregate)
    /// before they are folded into `st`.
    pub(crate) fn load_for_values<S: StateStore>(
        &self,
        store: &mut S,
        st: &mut GroupState,
        aggs: &[AggSpec],
        args: &[Datum],
    ) -> Result<(), EngineError> {
        for (acc, ((spec, state), v)) in aggs.iter().zip(&mut st.accs).zip(args).enumerate() {
            let AccState::Multiset(m) = state else {
                continue;
            };
            if m.chunks.is_none() {
                continue;
            }
            if let Some(i) = multiset_key(spec.kind, v).and_then(|k| m.chunk_to_load(&k)) {
                self.load(store, acc, m, i)?;
            }
        }
        Ok(())
    }

    /// Reads the chunks holding the values of `other`'s multisets (whole,
    /// see [`Self::load_all`]) before `other` is added to or subtracted
    /// from `st`.
    pub(crate) fn load_for_state<S: StateStore>(
        &self,
        store: &mut S,
        st: &mut GroupState,
        other: &GroupState,
    ) -> Result<(), EngineError> {
        for (acc, (state, o)) in st.accs.iter_mut().zip(&other.accs).enumerate() {
            let (AccState::Multiset(m), AccState::Multiset(o)) = (state, o) else {
                continue;
            };
            if m.chunks.is_none() {
                continue;
            }
            let wanted = m.chunks_for(o);
            self.load_many(store, acc, m, wanted)?;
        }
        Ok(())
    }

    /// Reads every chunk of `st` (a sub-aggregate about to be moved whole).
    pub(crate) fn load_all<S: StateStore>(
        &self,
        store: &mut S,
        st: &mut GroupState,
    ) -> Result<(), EngineError> {
        for (acc, state) in st.accs.iter_mut().enumerate() {
            if let AccState::Multiset(m) = state {
                self.load_all_of(store, acc, m)?;
            }
        }
        Ok(())
    }

    /// Reads the chunks MIN and MAX results are taken from.
    pub(crate) fn load_extremes<S: StateStore>(
        &self,
        store: &mut S,
        st: &mut GroupState,
        aggs: &[AggSpec],
    ) -> Result<(), EngineError> {
        for (acc, (spec, state)) in aggs.iter().zip(&mut st.accs).enumerate() {
            let AccState::Multiset(m) = state else {
                continue;
            };
            let max = match spec.kind {
                AggKind::Min => false,
                AggKind::Max => true,
                _ => continue,
            };
            while let Some(i) = m.extreme_to_load(max) {
                self.load(store, acc, m, i)?;
            }
        }
        Ok(())
    }

    /// `old` (the state as stored before this call) with the entries of
    /// the chunks read in this call, so that it can be compared with `new`
    /// entry by entry: the chunks `new` read, or every chunk when `new`
    /// holds a multiset inline.
    pub(crate) fn old_for_delta<S: StateStore>(
        &self,
        store: &mut S,
        mut old: GroupState,
        new: Option<&GroupState>,
    ) -> Result<GroupState, EngineError> {
        for (acc, state) in old.accs.iter_mut().enumerate() {
            let AccState::Multiset(m) = state else {
                continue;
            };
            let Some(old_chunks) = &m.chunks else {
                continue;
            };
            let read = new.and_then(|n| match n.accs.get(acc) {
                Some(AccState::Multiset(Multiset {
                    chunks: Some(c), ..
                })) => Some(c),
                _ => None,
            });
            let Some(read) = read.filter(|c| same_directory(c, old_chunks)) else {
                self.load_all_of(store, acc, m)?;
                continue;
            };
            // Inline, with the read chunks' entries only: enough to be
            // compared with `new` (which holds only those chunks too).
            let mut entries = Vec::new();
            for ch in &read.dir {
                if let Some(l) = &ch.loaded {
                    entries.extend(
                        codec::decode_chunk(&l.bytes)
                            .map_err(|e| self.corrupt(format!("chunk {}: {e}", ch.id)))?,
                    );
                }
            }
            *m = Multiset {
                map: entries.into_iter().collect(),
                chunks: None,
            };
        }
        Ok(old)
    }

    /// Writes the state of the group at the end of a call: its chunks, then
    /// its blob (`None` deletes the group), then deletes chunks no longer in
    /// use. `loaded` is the blob as read at the start of the call and
    /// `old_ids` the chunks it refers to ([`chunk_ids`]). Returns whether
    /// anything was written.
    pub(crate) fn write_group<S: StateStore>(
        &self,
        store: &mut S,
        loaded: Option<&[u8]>,
        old_ids: &ChunkIds,
        state: Option<&mut GroupState>,
    ) -> Result<bool, EngineError> {
        let mut changed = false;
        let mut new_ids = BTreeSet::new();
        let bytes = match state {
            None => None,
            Some(st) => {
                for (acc, state) in st.accs.iter_mut().enumerate() {
                    if let AccState::Multiset(m) = state {
                        let first_id = old_ids
                            .iter()
                            .filter(|(a, _)| *a == acc)
                            .map(|(_, id)| id + 1)
                            .max()
                            .unwrap_or(0);
                        changed |= self.write_chunks(store, acc, m, first_id, &mut new_ids)?;
                    }
                }
                Some(codec::encode(st))
            }
        };
        if bytes.as_deref() != loaded {
            store
                .store_group(self.ns, self.key, bytes.as_deref())
                .map_err(store_err("store_group"))?;
            changed = true;
        }
        let ns = chunk_namespace(self.ns);
        for (acc, id) in old_ids.difference(&new_ids) {
            store
                .store_group(&ns, &chunk_key(self.key, *acc, *id), None)
                .map_err(store_err("store_group"))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Stores the chunks of one multiset as it is to be written (see
    /// [`Self::write_group`]); adds the ids in use to `ids`. Returns
    /// whether a chunk was written.
    fn write_chunks<S: StateStore>(
        &self,
        store: &mut S,
        acc: usize,
        m: &mut Multiset,
        first_id: u64,
        ids: &mut BTreeSet<(usize, u64)>,
    ) -> Result<bool, EngineError> {
        let ns = chunk_namespace(self.ns);
        let put = |store: &mut S, id: u64, bytes: &[u8]| {
            store
                .store_group(&ns, &chunk_key(self.key, acc, id), Some(bytes))
                .map_err(store_err("store_group"))
        };
        let mut written = false;
        let Some(chunks) = m.chunks.take() else {
            if m.map.len() <= self.sizes.spill_above {
                return Ok(false);
            }
            // Grown past inline: into chunks.
            let entries: Vec<_> = std::mem::take(&mut m.map).into_iter().collect();
            let mut next_id = first_id;
            let mut dir = Vec::new();
            for piece in pieces(entries, self.sizes.chunk_max, self.sizes.chunk_fill) {
                let Some(lower) = piece.first().map(|(v, _)| v.clone()) else {
                    continue;
                };
                put(store, next_id, &chunk_bytes(&piece))?;
                ids.insert((acc, next_id));
                dir.push(Chunk {
                    lower,
                    id: next_id,
                    len: piece.len() as u64,
                    loaded: None,
                });
                next_id += 1;
            }
            m.chunks = Some(Chunks { dir, next_id });
            return Ok(true);
        };
        m.chunks = Some(chunks);
        if m.len() <= self.sizes.inline_at_most as u64 {
            // Shrunk: back inline (the old chunks are deleted by the caller).
            let pending = m.unloaded();
            for i in pending {
                self.load(store, acc, m, i)?;
            }
            let map = m.iter().map(|(v, w)| (v.clone(), *w)).collect();
            *m = Multiset { map, chunks: None };
            return Ok(false);
        }
        let Some(chunks) = m.chunks.take() else {
            return Ok(false);
        };
        let mut dir = Vec::with_capacity(chunks.dir.len());
        let mut next_id = chunks.next_id;
        for ch in chunks.dir {
            let Some(Loaded { bytes: stored, map }) = ch.loaded else {
                ids.insert((acc, ch.id));
                dir.push(ch);
                continue;
            };
            let entries: Vec<_> = map.into_iter().collect();
            // An emptied chunk is dropped; its range joins the previous one.
            let split = pieces(entries, self.sizes.chunk_max, self.sizes.chunk_fill);
            for (k, piece) in split.into_iter().enumerate() {
                let Some(first) = piece.first().map(|(v, _)| v.clone()) else {
                    continue;
                };
                let (id, lower) = if k == 0 {
                    (ch.id, ch.lower.clone())
                } else {
                    next_id += 1;
                    (next_id - 1, first)
                };
                let bytes = chunk_bytes(&piece);
                if k > 0 || bytes != stored {
                    put(store, id, &bytes)?;
                    written = true;
                }
                ids.insert((acc, id));
                dir.push(Chunk {
                    lower,
                    id,
                    len: piece.len() as u64,
                    loaded: None,
                });
            }
        }
        m.chunks = (!dir.is_empty()).then_some(Chunks { dir, next_id });
        Ok(written)
    }
}

fn chunk_bytes(entries: &[(crate::agg::OrdValue, i64)]) -> Vec<u8> {
    codec::encode_chunk(entries.len(), entries.iter().map(|(v, w)| (v, w)))
}

/// Whether two directories list the same chunks.
fn same_directory(a: &Chunks, b: &Chunks) -> bool {
    a.dir.len() == b.dir.len()
        && a.dir
            .iter()
            .zip(&b.dir)
            .all(|(x, y)| x.id == y.id && x.lower == y.lower && x.len == y.len)
}

/// (accumulator, chunk id) of chunks.
pub(crate) type ChunkIds = BTreeSet<(usize, u64)>;

/// Every chunk a stored state refers to.
pub(crate) fn chunk_ids(st: &GroupState) -> ChunkIds {
    let mut ids = BTreeSet::new();
    for (acc, state) in st.accs.iter().enumerate() {
        if let AccState::Multiset(Multiset {
            chunks: Some(c), ..
        }) = state
        {
            ids.extend(c.dir.iter().map(|ch| (acc, ch.id)));
        }
    }
    ids
}

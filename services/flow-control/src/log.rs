//! The durable KV log in sled: per-partition change log, partition meta and the window index.
//!
//! Only single-key writes are used. sled's transactions and `apply_batch`
//! switch the whole process into a reader-writer locking mode in which
//! concurrent flushes of several partitions can deadlock under load; plain
//! inserts never take that lock. An append writes its log entries, then the
//! window index entries, then the partition meta, which is the commit point:
//! sled recovers a prefix of its write log, so a meta that survived a crash
//! implies everything written before it did, and whatever an append wrote
//! after the last surviving meta is ignored and removed by [`KvLog::recover`].
//! Nothing of such an append was acknowledged or published, because both
//! wait for a flush that covers the meta.

use crate::window::{OpenWindow, SealedWindow};
use mdp_types::{ChangeEvent, Position, WindowId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const WINDOWS_TREE: &str = "windows";
/// sled's page cache. A window's changes are read back right after they
/// were appended and the index and meta entries are small, so the recent
/// part of the log is what is read; sled's 1 GiB default would only let the
/// process grow (to about 600 MB in a 200,000-change backlog).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Errors of the KV log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("kv store operation failed: {op}")]
    Sled {
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("failed to encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("kv log write task failed: {0}")]
    Task(String),
    #[error("kv store flush failed: {0}")]
    Flush(String),
    #[error("corrupt {what} in the kv log (partition {partition}, key {key})")]
    Corrupt {
        what: &'static str,
        partition: u32,
        key: u64,
    },
}

impl LogError {
    fn sled(op: &'static str) -> impl FnOnce(sled::Error) -> LogError {
        move |source| LogError::Sled { op, source }
    }
}

/// Key of a log entry: partition then seq, big-endian so keys sort by seq.
fn log_key(partition: u32, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&partition.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Key of a window index entry: partition then window id.
fn window_key(partition: u32, id: WindowId) -> [u8; 12] {
    log_key(partition, id)
}

fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if key.len() == 12 {
        b.copy_from_slice(&key[4..]);
    }
    u64::from_be_bytes(b)
}

/// Per partition: the last accepted source position and the next log seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub last_position: Option<Position>,
    /// Seq the next appended change gets (seqs start at 1).
    pub next_seq: u64,
}

impl Default for PartitionMeta {
    fn default() -> Self {
        PartitionMeta {
            last_position: None,
            next_seq: 1,
        }
    }
}

#[derive(Serialize)]
struct StoredChangeRef<'a> {
    at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tp: Option<&'a str>,
    event: &'a ChangeEvent,
}

/// A log entry with its change left as JSON text.
#[derive(Deserialize)]
struct StoredChangeJson<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
}

/// A log entry without its change (recovery only needs these).
#[derive(Deserialize)]
struct StoredHeader {
    at_ms: i64,
    #[serde(default)]
    tp: Option<String>,
}

/// Life cycle of a window in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    /// Collecting changes; `last_seq` grows.
    Open,
    /// Complete and durable; not yet confirmed by the broker.
    Sealed,
    /// Confirmed by the broker.
    Published,
}

/// A window index entry: (partition, window id) → change range and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub partition: u32,
    pub id: WindowId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub opened_at_ms: i64,
    pub sealed_at_ms: Option<i64>,
    pub published_at_ms: Option<i64>,
    pub state: WindowState,
    /// Trace context of the batch that carried the window's first change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl WindowRecord {
    pub fn open(partition: u32, w: &OpenWindow) -> Self {
        WindowRecord {
            partition,
            id: w.id,
            first_seq: w.first_seq,
            last_seq: w.last_seq,
            opened_at_ms: w.opened_at_ms,
            sealed_at_ms: None,
            published_at_ms: None,
            state: WindowState::Open,
            traceparent: w.traceparent.clone(),
        }
    }

    pub fn sealed(partition: u32, w: &SealedWindow) -> Self {
        WindowRecord {
            partition,
            id: w.id,
            first_seq: w.first_seq,
            last_seq: w.last_seq,
            opened_at_ms: w.opened_at_ms,
            sealed_at_ms: Some(w.sealed_at_ms),
            published_at_ms: None,
            state: WindowState::Sealed,
            traceparent: w.traceparent.clone(),
        }
    }

    pub fn changes(&self) -> u64 {
        self.last_seq.saturating_sub(self.first_seq) + 1
    }
}

/// One atomic append: accepted changes of one partition plus the partition's
/// new meta and the window index entries the append opened, grew or sealed.
pub struct Append<'a> {
    pub partition: u32,
    /// Seq of `events[0]`; the rest follow contiguously.
    pub first_seq: u64,
    pub at_ms: i64,
    pub traceparent: Option<&'a str>,
    pub events: &'a [&'a ChangeEvent],
    pub meta: &'a PartitionMeta,
    pub windows: &'a [WindowRecord],
}

/// What a restart finds for one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredPartition {
    pub meta: PartitionMeta,
    /// The highest sealed or published window.
    pub last_closed: Option<WindowRecord>,
    /// Sealed windows never confirmed by the broker, in id order.
    pub unpublished: Vec<WindowRecord>,
    /// Log entries after `last_closed` as (seq, accepted_at_ms, traceparent).
    pub tail: Vec<(u64, i64, Option<String>)>,
}

/// The sled database with its three trees. Cheap to clone.
#[derive(Clone)]
pub struct KvLog {
    log: sled::Tree,
    meta: sled::Tree,
    windows: sled::Tree,
    /// The flusher thread (see [`KvLog::flush`]).
    flusher: Arc<Flusher>,
}

/// Owns the flusher thread; the last [`KvLog`] clone dropped stops it and
/// waits for it, so the database is closed when the drop returns.
struct Flusher {
    requests: Option<std::sync::mpsc::Sender<FlushRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answered once a flush that started after the request completed.
type FlushRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The flusher thread: takes every request waiting, flushes once, answers
/// them all (group commit). Ends when every [`KvLog`] clone is gone.
fn run_flusher(db: sled::Db, requests: std::sync::mpsc::Receiver<FlushRequest>) {
    while let Ok(first) = requests.recv() {
        let mut waiting = vec![first];
        waiting.extend(requests.try_iter());
        let started = Instant::now();
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        crate::metrics::KV_FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

impl KvLog {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(LogError::sled("open"))?;
        let log = db
            .open_tree(LOG_TREE)
            .map_err(LogError::sled("open tree"))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(LogError::sled("open tree"))?;
        let windows = db
            .open_tree(WINDOWS_TREE)
            .map_err(LogError::sled("open tree"))?;
        let (tx, requests) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kv-flusher".into())
            .spawn(move || run_flusher(db, requests))
            .map_err(|e| LogError::Task(format!("starting the flusher thread: {e}")))?;
        let flusher = Arc::new(Flusher {
            requests: Some(tx),
            thread: Some(thread),
        });
        Ok(KvLog {
            log,
            meta,
            windows,
            flusher,
        })
    }

    /// The partition's meta (defaults for a partition never written).
    pub fn meta(&self, partition: u32) -> Result<PartitionMeta, LogError> {
        match self
            .meta
            .get(partition.to_be_bytes())
            .map_err(LogError::sled("read meta"))?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| LogError::Corrupt {
                what: "partition meta",
                partition,
                key: 0,
            }),
            None => Ok(PartitionMeta::default()),
        }
    }

    /// Writes the append, meta last (not yet durable: call [`KvLog::flush`]).
    /// Writing the same append twice overwrites the same keys, so an append
    /// retried after a failed write or flush is harmless.
    pub fn append(&self, a: &Append<'_>) -> Result<(), LogError> {
        for (i, event) in a.events.iter().enumerate() {
            let entry = StoredChangeRef {
                at_ms: a.at_ms,
                tp: a.traceparent,
                event,
            };
            let value = serde_json::to_vec(&entry).map_err(|source| LogError::Encode {
                what: "change",
                source,
            })?;
            self.log
                .insert(log_key(a.partition, a.first_seq + i as u64), value)
                .map_err(LogError::sled("append"))?;
        }
        self.put_windows(a.windows)?;
        let meta_value = serde_json::to_vec(a.meta).map_err(|source| LogError::Encode {
            what: "partition meta",
            source,
        })?;
        self.meta
            .insert(a.partition.to_be_bytes(), meta_value)
            .map_err(LogError::sled("append"))?;
        Ok(())
    }

    /// Writes window index entries (not yet durable: call [`KvLog::flush`]).
    pub fn put_windows(&self, records: &[WindowRecord]) -> Result<(), LogError> {
        for r in records {
            let value = serde_json::to_vec(r).map_err(|source| LogError::Encode {
                what: "window index entry",
                source,
            })?;
            self.windows
                .insert(window_key(r.partition, r.id), value)
                .map_err(LogError::sled("write window index"))?;
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    ///
    /// One thread flushes for every partition: requests that arrive while a
    /// flush runs are served together by the next one (group commit).
    /// sled's `flush_async` is not used: it runs on sled's small thread pool,
    /// which also writes the buffers a flush waits for, and several
    /// partitions flushing at once starved it for good. A lock shared by the
    /// partition actors is not used either: an actor awaiting an atomic
    /// response does not poll its other futures, so one holding the lock
    /// would never release it.
    pub async fn flush(&self) -> Result<(), LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flusher
            .requests
            .as_ref()
            .ok_or_else(|| LogError::Task("the flusher thread stopped".into()))?
            .send(tx)
            .map_err(|_| LogError::Task("the flusher thread stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LogError::Flush(e)),
            Err(_) => Err(LogError::Task("the flusher thread stopped".into())),
        }
    }

    /// The changes stored at `first_seq..=last_seq`, in seq order, as the
    /// JSON they were stored as: a window is published without decoding
    /// and encoding every change again.
    pub fn read_changes_json(
        &self,
        partition: u32,
        first_seq: u64,
        last_seq: u64,
    ) -> Result<Vec<Box<RawValue>>, LogError> {
        let mut out = Vec::with_capacity(last_seq.saturating_sub(first_seq) as usize + 1);
        let mut expected = first_seq;
        for item in self
            .log
            .range(log_key(partition, first_seq)..=log_key(partition, last_seq))
        {
            let (key, value) = item.map_err(LogError::sled("read log"))?;
            let seq = seq_of(&key);
            if seq != expected {
                return Err(LogError::Corrupt {
                    what: "missing log entry",
                    partition,
                    key: expected,
                });
            }
            let stored: StoredChangeJson<'_> =
                serde_json::from_slice(&value).map_err(|_| LogError::Corrupt {
                    what: "log entry",
                    partition,
                    key: seq,
                })?;
            out.push(stored.event.to_owned());
            expected += 1;
        }
        if expected != last_seq + 1 {
            return Err(LogError::Corrupt {
                what: "missing log entry",
                partition,
                key: expected,
            });
        }
        Ok(out)
    }

    /// One window index entry.
    pub fn window(&self, partition: u32, id: WindowId) -> Result<Option<WindowRecord>, LogError> {
        self.windows
            .get(window_key(partition, id))
            .map_err(LogError::sled("read window index"))?
            .map(|v| decode_window(partition, id, &v))
            .transpose()
    }

    /// The partition's latest `limit` window index entries, newest first.
    pub fn latest_windows(
        &self,
        partition: u32,
        limit: usize,
    ) -> Result<Vec<WindowRecord>, LogError> {
        let mut out = Vec::new();
        for item in self
            .windows
            .scan_prefix(partition.to_be_bytes())
            .rev()
            .take(limit)
        {
            let (key, value) = item.map_err(LogError::sled("read window index"))?;
            out.push(decode_window(partition, seq_of(&key), &value)?);
        }
        Ok(out)
    }

    /// What a restart needs for `partition`: its meta, the last closed window,
    /// the sealed-but-unpublished windows and the log entries after the last
    /// closed window. Windows are published in id order, so the unpublished
    /// ones are the newest: the index is read backwards up to the first
    /// published entry.
    ///
    /// Entries of an append whose meta did not survive a crash (log entries
    /// at or after `meta.next_seq`, window entries reaching them) are removed
    /// first: they were never acknowledged nor published.
    pub fn recover(&self, partition: u32) -> Result<RecoveredPartition, LogError> {
        let meta = self.meta(partition)?;
        self.remove_uncommitted(partition, meta.next_seq)?;
        let mut last_closed = None;
        let mut unpublished = Vec::new();
        for item in self.windows.scan_prefix(partition.to_be_bytes()).rev() {
            let (key, value) = item.map_err(LogError::sled("read window index"))?;
            let record = decode_window(partition, seq_of(&key), &value)?;
            match record.state {
                WindowState::Open => continue,
                WindowState::Sealed => {
                    if last_closed.is_none() {
                        last_closed = Some(record.clone());
                    }
                    unpublished.push(record);
                }
                WindowState::Published => {
                    if last_closed.is_none() {
                        last_closed = Some(record);
                    }
                    break;
                }
            }
        }
        unpublished.reverse();
        let tail_start = last_closed.as_ref().map_or(1, |w| w.last_seq + 1);
        let mut tail = Vec::new();
        for item in self
            .log
            .range(log_key(partition, tail_start)..=log_key(partition, u64::MAX))
        {
            let (key, value) = item.map_err(LogError::sled("read log"))?;
            let seq = seq_of(&key);
            let header: StoredHeader =
                serde_json::from_slice(&value).map_err(|_| LogError::Corrupt {
                    what: "log entry",
                    partition,
                    key: seq,
                })?;
            tail.push((seq, header.at_ms, header.tp));
        }
        Ok(RecoveredPartition {
            meta,
            last_closed,
            unpublished,
            tail,
        })
    }

    /// Removes the partition's log entries from `next_seq` on and the window
    /// entries reaching them. Returns how many entries were removed.
    fn remove_uncommitted(&self, partition: u32, next_seq: u64) -> Result<usize, LogError> {
        let mut removed = 0;
        let stale_log: Vec<sled::IVec> = self
            .log
            .range(log_key(partition, next_seq)..=log_key(partition, u64::MAX))
            .keys()
            .collect::<Result<_, _>>()
            .map_err(LogError::sled("read log"))?;
        for key in stale_log {
            self.log.remove(key).map_err(LogError::sled("trim log"))?;
            removed += 1;
        }
        let mut stale_windows = Vec::new();
        for item in self.windows.scan_prefix(partition.to_be_bytes()).rev() {
            let (key, value) = item.map_err(LogError::sled("read window index"))?;
            let record = decode_window(partition, seq_of(&key), &value)?;
            if record.last_seq < next_seq {
                break;
            }
            stale_windows.push(key);
        }
        for key in stale_windows {
            self.windows
                .remove(key)
                .map_err(LogError::sled("trim window index"))?;
            removed += 1;
        }
        if removed > 0 {
            tracing::warn!(
                partition,
                removed,
                next_seq,
                "removed kv log entries of an append that did not complete before a crash"
            );
        }
        Ok(removed)
    }
}

fn decode_window(partition: u32, id: WindowId, bytes: &[u8]) -> Result<WindowRecord, LogError> {
    serde_json::from_slice(bytes).map_err(|_| LogError::Corrupt {
        what: "window index entry",
        partition,
        key: id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::tests::event;
    use crate::window::{SealReason, WindowCutter, WindowSpec};

    impl KvLog {
        /// The changes stored at `first_seq..=last_seq`, decoded.
        fn read_changes(
            &self,
            partition: u32,
            first_seq: u64,
            last_seq: u64,
        ) -> Result<Vec<ChangeEvent>, LogError> {
            Ok(self
                .read_changes_json(partition, first_seq, last_seq)?
                .iter()
                .map(|json| serde_json::from_str(json.get()).expect("stored change"))
                .collect())
        }
    }

    fn append(
        log: &KvLog,
        partition: u32,
        first_seq: u64,
        events: &[ChangeEvent],
        windows: &[WindowRecord],
    ) {
        let refs: Vec<&ChangeEvent> = events.iter().collect();
        let meta = PartitionMeta {
            last_position: events.last().map(|e| e.position.clone()),
            next_seq: first_seq + events.len() as u64,
        };
        log.append(&Append {
            partition,
            first_seq,
            at_ms: 1000 + first_seq as i64,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            events: &refs,
            meta: &meta,
            windows,
        })
        .expect("append");
    }

    /// Opens the log again after the test dropped it: sled's background
    /// threads release the directory's file lock shortly after the drop, so
    /// a busy lock is retried for up to 5 s.
    async fn reopen(dir: &Path) -> KvLog {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match KvLog::open(dir) {
                Ok(log) => return log,
                Err(e)
                    if format!("{e:?}").contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("reopen: {e:?}"),
            }
        }
    }

    fn sealed(partition: u32, id: u64, first: u64, last: u64) -> WindowRecord {
        WindowRecord::sealed(
            partition,
            &SealedWindow {
                id,
                first_seq: first,
                last_seq: last,
                opened_at_ms: 1,
                sealed_at_ms: 2,
                traceparent: None,
                reason: SealReason::Time,
            },
        )
    }

    #[tokio::test]
    async fn append_then_reopen_keeps_changes_meta_and_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<ChangeEvent> = (1..=5).map(|i| event(i * 10, 0)).collect();
        {
            let log = KvLog::open(dir.path()).expect("open");
            assert_eq!(log.meta(3).expect("meta"), PartitionMeta::default());
            append(&log, 3, 1, &events[..3], &[sealed(3, 1, 1, 3)]);
            append(&log, 3, 4, &events[3..], &[]);
            // Another partition is independent.
            append(&log, 4, 1, &events[..1], &[]);
            log.flush().await.expect("flush");
        }
        let log = reopen(dir.path()).await;
        let meta = log.meta(3).expect("meta");
        assert_eq!(meta.next_seq, 6);
        assert_eq!(meta.last_position.map(|p| p.offset), Some(50));
        assert_eq!(log.read_changes(3, 1, 5).expect("read"), events);
        assert_eq!(
            log.read_changes(3, 2, 3).expect("read"),
            events[1..3].to_vec()
        );
        assert_eq!(
            log.read_changes(4, 1, 1).expect("read"),
            events[..1].to_vec()
        );
        assert!(matches!(
            log.read_changes(3, 5, 6),
            Err(LogError::Corrupt { .. })
        ));
        let w = log.window(3, 1).expect("window").expect("present");
        assert_eq!(
            (w.first_seq, w.last_seq, w.state),
            (1, 3, WindowState::Sealed)
        );
        assert!(log.window(3, 2).expect("window").is_none());
    }

    #[tokio::test]
    async fn recover_finds_unpublished_windows_and_the_open_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<ChangeEvent> = (1..=8).map(|i| event(i * 10, 0)).collect();
        {
            let log = KvLog::open(dir.path()).expect("open");
            let mut w1 = sealed(0, 1, 1, 2);
            w1.state = WindowState::Published;
            append(&log, 0, 1, &events[..2], &[w1]);
            append(
                &log,
                0,
                3,
                &events[2..5],
                &[sealed(0, 2, 3, 4), sealed(0, 3, 5, 5)],
            );
            let open = WindowRecord::open(
                0,
                &OpenWindow {
                    id: 4,
                    first_seq: 6,
                    last_seq: 8,
                    opened_at_ms: 1006,
                    traceparent: None,
                },
            );
            append(&log, 0, 6, &events[5..], &[open]);
            log.flush().await.expect("flush");
        }
        let log = reopen(dir.path()).await;
        let r = log.recover(0).expect("recover");
        assert_eq!(r.meta.next_seq, 9);
        assert_eq!(r.last_closed.as_ref().map(|w| w.id), Some(3));
        assert_eq!(
            r.unpublished.iter().map(|w| w.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(
            r.tail.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        assert_eq!(r.tail[0].1, 1006);
        assert!(r.tail[0].2.is_some());

        let (cutter, resealed) = WindowCutter::recover(
            WindowSpec::new(1000, 100),
            r.last_closed.map(|w| w.id),
            r.tail,
        );
        assert!(resealed.is_empty());
        let open = cutter.open_window().expect("open window");
        assert_eq!((open.id, open.first_seq, open.last_seq), (4, 6, 8));

        let latest = log.latest_windows(0, 2).expect("latest");
        assert_eq!(latest.iter().map(|w| w.id).collect::<Vec<_>>(), vec![4, 3]);
        assert_eq!(latest[0].state, WindowState::Open);
    }

    #[tokio::test]
    async fn recover_drops_an_append_whose_meta_was_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<ChangeEvent> = (1..=6).map(|i| event(i * 10, 0)).collect();
        {
            let log = KvLog::open(dir.path()).expect("open");
            append(&log, 2, 1, &events[..3], &[sealed(2, 1, 1, 2)]);
            // A crash between the entries and the meta of the next append:
            // its log and window entries are written, its meta is not.
            let refs: Vec<&ChangeEvent> = events[3..].iter().collect();
            for (i, e) in refs.iter().enumerate() {
                let value = serde_json::to_vec(&StoredChangeRef {
                    at_ms: 1,
                    tp: None,
                    event: e,
                })
                .expect("encode");
                log.log
                    .insert(log_key(2, 4 + i as u64), value)
                    .expect("insert");
            }
            log.put_windows(&[sealed(2, 2, 3, 5)]).expect("windows");
            log.flush().await.expect("flush");
        }
        let log = reopen(dir.path()).await;
        let r = log.recover(2).expect("recover");
        assert_eq!(r.meta.next_seq, 4);
        assert_eq!(r.meta.last_position.map(|p| p.offset), Some(30));
        assert_eq!(r.last_closed.map(|w| w.id), Some(1));
        assert_eq!(
            r.unpublished.iter().map(|w| w.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(r.tail.iter().map(|t| t.0).collect::<Vec<_>>(), vec![3]);
        assert!(log.window(2, 2).expect("window").is_none());
        assert!(matches!(
            log.read_changes(2, 4, 4),
            Err(LogError::Corrupt { .. })
        ));
        assert_eq!(
            log.read_changes(2, 1, 3).expect("read"),
            events[..3].to_vec()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_partitions_appending_and_flushing_at_once_all_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KvLog::open(dir.path()).expect("open");
        let partitions = 16u32;
        let rounds = 100u64;
        let mut tasks = Vec::new();
        for p in 0..partitions {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..rounds {
                    let events: Vec<ChangeEvent> =
                        (0..5).map(|i| event(r * 10 + i + 1, p)).collect();
                    append(&log, p, r * 5 + 1, &events, &[]);
                    log.flush().await.expect("flush");
                }
            }));
        }
        let all = futures::future::join_all(tasks);
        let joined = tokio::time::timeout(std::time::Duration::from_secs(120), all)
            .await
            .expect("appends and flushes finished");
        assert!(joined.iter().all(Result::is_ok));
        for p in 0..partitions {
            assert_eq!(log.meta(p).expect("meta").next_seq, rounds * 5 + 1);
            let changes = log.read_changes(p, 1, rounds * 5).expect("read");
            assert_eq!(changes.len() as u64, rounds * 5);
        }
    }

    #[tokio::test]
    async fn recover_of_an_empty_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KvLog::open(dir.path()).expect("open");
        let r = log.recover(7).expect("recover");
        assert_eq!(r.meta, PartitionMeta::default());
        assert!(r.last_closed.is_none() && r.unpublished.is_empty() && r.tail.is_empty());
    }

    #[tokio::test]
    async fn marking_published_ends_the_unpublished_suffix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KvLog::open(dir.path()).expect("open");
        let events: Vec<ChangeEvent> = (1..=2).map(|i| event(i * 10, 0)).collect();
        append(
            &log,
            1,
            1,
            &events,
            &[sealed(1, 1, 1, 1), sealed(1, 2, 2, 2)],
        );
        let mut w1 = log.window(1, 1).expect("read").expect("present");
        w1.state = WindowState::Published;
        w1.published_at_ms = Some(5);
        log.put_windows(&[w1]).expect("mark");
        let r = log.recover(1).expect("recover");
        assert_eq!(
            r.unpublished.iter().map(|w| w.id).collect::<Vec<_>>(),
            vec![2]
        );
        let mut w2 = log.window(1, 2).expect("read").expect("present");
        w2.state = WindowState::Published;
        log.put_windows(&[w2]).expect("mark");
        let r = log.recover(1).expect("recover");
        assert!(r.unpublished.is_empty());
        assert_eq!(r.last_closed.map(|w| w.id), Some(2));
        assert!(r.tail.is_empty());
    }
}

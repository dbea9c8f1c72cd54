//! Progress shared between the reader, the publisher and the HTTP routes.

use crate::store::{BinlogPosition, SavedPosition};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the reader is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Snapshot,
    Streaming,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    saved: Option<SavedPosition>,
    read: Option<BinlogPosition>,
    source_end: Option<BinlogPosition>,
    lag_bytes: Option<u64>,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestState {
    inner: Arc<Mutex<Inner>>,
    events_published: Arc<AtomicU64>,
    batches_published: Arc<AtomicU64>,
    events_read: Arc<AtomicU64>,
}

/// A consistent copy of the state, as served by `GET /v1/position`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PositionReport {
    pub phase: Phase,
    /// Where reading resumes after a restart.
    pub saved: Option<SavedPosition>,
    /// The last transaction boundary read from the source.
    pub read: Option<BinlogPosition>,
    /// The source's current end of binlog, as last observed.
    pub source_end: Option<BinlogPosition>,
    /// Binlog bytes between `saved` and `source_end`.
    pub lag_bytes: Option<u64>,
    pub events_read: u64,
    pub events_published: u64,
    pub batches_published: u64,
}

impl IngestState {
    pub fn new(saved: Option<SavedPosition>) -> Self {
        IngestState {
            inner: Arc::new(Mutex::new(Inner {
                phase: Phase::Starting,
                saved,
                read: None,
                source_end: None,
                lag_bytes: None,
            })),
            events_published: Arc::default(),
            batches_published: Arc::default(),
            events_read: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the plain data inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_phase(&self, phase: Phase) {
        self.lock().phase = phase;
    }

    pub fn set_saved(&self, saved: SavedPosition) {
        self.lock().saved = Some(saved);
    }

    pub fn saved(&self) -> Option<SavedPosition> {
        self.lock().saved.clone()
    }

    pub fn set_read(&self, pos: BinlogPosition) {
        self.lock().read = Some(pos);
    }

    pub fn set_source_end(&self, end: BinlogPosition, lag_bytes: Option<u64>) {
        let mut g = self.lock();
        g.source_end = Some(end);
        g.lag_bytes = lag_bytes;
    }

    pub fn add_read(&self, n: u64) {
        self.events_read.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_published(&self, events: u64, batches: u64) {
        self.events_published.fetch_add(events, Ordering::Relaxed);
        self.batches_published.fetch_add(batches, Ordering::Relaxed);
    }

    pub fn events_published(&self) -> u64 {
        self.events_published.load(Ordering::Relaxed)
    }

    pub fn report(&self) -> PositionReport {
        let g = self.lock();
        PositionReport {
            phase: g.phase,
            saved: g.saved.clone(),
            read: g.read.clone(),
            source_end: g.source_end.clone(),
            lag_bytes: g.lag_bytes,
            events_read: self.events_read.load(Ordering::Relaxed),
            events_published: self.events_published.load(Ordering::Relaxed),
            batches_published: self.batches_published.load(Ordering::Relaxed),
        }
    }
}

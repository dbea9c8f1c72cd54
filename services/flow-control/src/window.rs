//! Window cutting for one partition: pure logic, no I/O, no clock.
//! The caller feeds appended changes (by KV-log seq) and timer ticks; the cutter says which windows to seal.

use mdp_types::WindowId;

/// When a window is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// A window is sealed once this many ms have passed since its first change.
    pub window_ms: u64,
    /// A window is sealed as soon as it holds this many changes (at least 1).
    pub max_changes: u64,
}

impl WindowSpec {
    pub fn new(window_ms: u64, max_changes: usize) -> Self {
        WindowSpec {
            window_ms: window_ms.max(1),
            max_changes: (max_changes as u64).max(1),
        }
    }
}

/// Why a window was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealReason {
    /// `window_ms` passed since the window opened.
    Time,
    /// The window reached `max_changes`.
    Size,
}

impl SealReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SealReason::Time => "time",
            SealReason::Size => "size",
        }
    }
}

/// The window currently collecting changes. Its changes are the contiguous
/// KV-log range `first_seq..=last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenWindow {
    pub id: WindowId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub opened_at_ms: i64,
    /// Trace context of the batch that carried the window's first change.
    pub traceparent: Option<String>,
}

impl OpenWindow {
    pub fn changes(&self) -> u64 {
        self.last_seq.saturating_sub(self.first_seq) + 1
    }
}

/// A window that is complete and must be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedWindow {
    pub id: WindowId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub opened_at_ms: i64,
    pub sealed_at_ms: i64,
    pub traceparent: Option<String>,
    pub reason: SealReason,
}

impl SealedWindow {
    pub fn changes(&self) -> u64 {
        self.last_seq.saturating_sub(self.first_seq) + 1
    }
}

/// Cuts one partition's change stream into windows with monotonic ids.
/// An empty partition has no open window, so no empty window is ever sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCutter {
    spec: WindowSpec,
    next_id: WindowId,
    open: Option<OpenWindow>,
}

impl WindowCutter {
    /// A cutter whose next window gets id `next_id` (ids start at 1).
    pub fn new(spec: WindowSpec, next_id: WindowId) -> Self {
        WindowCutter {
            spec,
            next_id: next_id.max(1),
            open: None,
        }
    }

    /// Rebuilds the cutter after a restart: `last_closed` is the id of the
    /// last closed (sealed or published) window and `tail` lists the log
    /// entries after it as `(seq, accepted_at_ms, traceparent)` in seq order.
    ///
    /// Appends and seals are written atomically with the window index, so the
    /// tail is exactly the window that was open: it comes back as one open
    /// window with its original `opened_at_ms` (sealed by the next tick when
    /// already due). Only when `max_changes` was lowered in between is the
    /// tail cut by size; those windows are returned for sealing and publishing.
    pub fn recover<I>(
        spec: WindowSpec,
        last_closed: Option<WindowId>,
        tail: I,
    ) -> (Self, Vec<SealedWindow>)
    where
        I: IntoIterator<Item = (u64, i64, Option<String>)>,
    {
        let mut cutter = WindowCutter::new(spec, last_closed.map_or(1, |id| id + 1));
        let mut sealed = Vec::new();
        for (seq, at_ms, tp) in tail {
            cutter.add(seq, at_ms, tp.as_deref(), &mut sealed);
        }
        (cutter, sealed)
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// The id the next opened window will get.
    pub fn next_id(&self) -> WindowId {
        self.next_id
    }

    pub fn open_window(&self) -> Option<&OpenWindow> {
        self.open.as_ref()
    }

    /// Adds the change stored at `seq` (accepted at `at_ms`). Windows sealed by
    /// this change are appended to `sealed`, oldest first: the open window when
    /// it expired before this change arrived, and the window this change fills.
    pub fn push(
        &mut self,
        seq: u64,
        at_ms: i64,
        traceparent: Option<&str>,
        sealed: &mut Vec<SealedWindow>,
    ) {
        if self.is_due(at_ms) {
            if let Some(w) = self.seal(at_ms, SealReason::Time) {
                sealed.push(w);
            }
        }
        self.add(seq, at_ms, traceparent, sealed);
    }

    /// Adds a change to the open window (opening one), sealing it when full.
    fn add(
        &mut self,
        seq: u64,
        at_ms: i64,
        traceparent: Option<&str>,
        sealed: &mut Vec<SealedWindow>,
    ) {
        match self.open.as_mut() {
            Some(open) => open.last_seq = seq,
            None => {
                self.open = Some(OpenWindow {
                    id: self.next_id,
                    first_seq: seq,
                    last_seq: seq,
                    opened_at_ms: at_ms,
                    traceparent: traceparent.map(str::to_string),
                });
                self.next_id += 1;
            }
        }
        if self
            .open
            .as_ref()
            .is_some_and(|w| w.changes() >= self.spec.max_changes)
        {
            if let Some(w) = self.seal(at_ms, SealReason::Size) {
                sealed.push(w);
            }
        }
    }

    /// Whether the open window has lived for `window_ms` at `now_ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.open.as_ref().is_some_and(|w| {
            let age = now_ms.saturating_sub(w.opened_at_ms);
            age >= 0 && age as u64 >= self.spec.window_ms
        })
    }

    /// Timer tick: seals the open window when it is due.
    pub fn tick(&mut self, now_ms: i64) -> Option<SealedWindow> {
        if self.is_due(now_ms) {
            self.seal(now_ms, SealReason::Time)
        } else {
            None
        }
    }

    fn seal(&mut self, now_ms: i64, reason: SealReason) -> Option<SealedWindow> {
        self.open.take().map(|w| SealedWindow {
            id: w.id,
            first_seq: w.first_seq,
            last_seq: w.last_seq,
            opened_at_ms: w.opened_at_ms,
            sealed_at_ms: now_ms,
            traceparent: w.traceparent,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cutter(window_ms: u64, max: usize) -> WindowCutter {
        WindowCutter::new(WindowSpec::new(window_ms, max), 1)
    }

    fn push(c: &mut WindowCutter, seq: u64, at: i64) -> Vec<SealedWindow> {
        let mut out = Vec::new();
        c.push(seq, at, Some(&format!("tp-{seq}")), &mut out);
        out
    }

    #[test]
    fn empty_partition_never_seals() {
        let mut c = cutter(100, 10);
        assert_eq!(c.tick(0), None);
        assert_eq!(c.tick(1_000_000), None);
        assert!(c.open_window().is_none());
        assert_eq!(c.next_id(), 1);
    }

    #[test]
    fn time_seal_after_window_ms_since_first_change() {
        let mut c = cutter(100, 10);
        assert!(push(&mut c, 1, 1000).is_empty());
        assert!(push(&mut c, 2, 1050).is_empty());
        assert_eq!(c.tick(1099), None);
        let w = c.tick(1100).expect("due at opened_at + window_ms");
        assert_eq!((w.id, w.first_seq, w.last_seq), (1, 1, 2));
        assert_eq!((w.opened_at_ms, w.sealed_at_ms), (1000, 1100));
        assert_eq!(w.reason, SealReason::Time);
        assert_eq!(w.changes(), 2);
        assert_eq!(w.traceparent.as_deref(), Some("tp-1"));
        assert!(c.open_window().is_none());
        assert_eq!(c.tick(5000), None);
    }

    #[test]
    fn size_seal_at_max_changes() {
        let mut c = cutter(1_000_000, 3);
        assert!(push(&mut c, 1, 0).is_empty());
        assert!(push(&mut c, 2, 0).is_empty());
        let sealed = push(&mut c, 3, 1);
        assert_eq!(sealed.len(), 1);
        assert_eq!(
            (sealed[0].id, sealed[0].first_seq, sealed[0].last_seq),
            (1, 1, 3)
        );
        assert_eq!(sealed[0].reason, SealReason::Size);
        assert!(c.open_window().is_none());
        assert!(push(&mut c, 4, 2).is_empty());
        let open = c.open_window().expect("new window opened");
        assert_eq!((open.id, open.first_seq, open.changes()), (2, 4, 1));
        assert_eq!(open.traceparent.as_deref(), Some("tp-4"));
    }

    #[test]
    fn expired_window_is_sealed_before_a_late_change() {
        let mut c = cutter(100, 10);
        push(&mut c, 1, 0);
        let sealed = push(&mut c, 2, 150);
        assert_eq!(sealed.len(), 1);
        assert_eq!(
            (sealed[0].id, sealed[0].last_seq, sealed[0].sealed_at_ms),
            (1, 1, 150)
        );
        let open = c.open_window().expect("late change opens the next window");
        assert_eq!((open.id, open.first_seq, open.opened_at_ms), (2, 2, 150));
    }

    #[test]
    fn ids_are_monotonic_and_ranges_contiguous() {
        let mut c = cutter(50, 4);
        let mut sealed = Vec::new();
        let mut t = 0;
        for seq in 1..=40u64 {
            t += 7;
            c.push(seq, t, None, &mut sealed);
            if let Some(w) = c.tick(t + 3) {
                sealed.push(w);
            }
        }
        if let Some(w) = c.tick(t + 1000) {
            sealed.push(w);
        }
        assert!(sealed.len() >= 10);
        for (i, w) in sealed.iter().enumerate() {
            assert_eq!(w.id, i as u64 + 1);
            assert!(w.changes() <= 4);
            if i > 0 {
                assert_eq!(w.first_seq, sealed[i - 1].last_seq + 1);
            }
        }
        assert_eq!(sealed[0].first_seq, 1);
        assert_eq!(sealed.last().map(|w| w.last_seq), Some(40));
    }

    #[test]
    fn max_one_seals_every_change() {
        let mut c = cutter(1000, 1);
        let mut out = Vec::new();
        c.push(1, 0, None, &mut out);
        c.push(2, 0, None, &mut out);
        assert_eq!(
            out.iter()
                .map(|w| (w.id, w.first_seq, w.last_seq))
                .collect::<Vec<_>>(),
            vec![(1, 1, 1), (2, 2, 2)]
        );
    }

    #[test]
    fn clock_going_backwards_does_not_seal() {
        let mut c = cutter(100, 10);
        push(&mut c, 1, 1000);
        assert_eq!(c.tick(500), None);
        assert!(c.open_window().is_some());
    }

    #[test]
    fn recovery_reopens_the_open_window_from_the_log_tail() {
        // Live: windows 1..=3 sealed, window 4 open with seqs 10..=12.
        let spec = WindowSpec::new(1000, 100);
        let tail = vec![
            (10, 5000, Some("tp-a".to_string())),
            (11, 5100, Some("tp-a".to_string())),
            (12, 5200, Some("tp-b".to_string())),
        ];
        let (c, sealed) = WindowCutter::recover(spec, Some(3), tail);
        assert!(sealed.is_empty());
        let open = c.open_window().expect("open window recovered");
        assert_eq!(
            (open.id, open.first_seq, open.last_seq, open.opened_at_ms),
            (4, 10, 12, 5000)
        );
        assert_eq!(open.traceparent.as_deref(), Some("tp-a"));
        assert_eq!(c.next_id(), 5);
    }

    #[test]
    fn recovery_of_a_fresh_partition_starts_at_one() {
        let (c, sealed) = WindowCutter::recover(WindowSpec::new(1000, 100), None, Vec::new());
        assert!(sealed.is_empty());
        assert!(c.open_window().is_none());
        assert_eq!(c.next_id(), 1);
    }

    #[test]
    fn recovery_matches_live_cutting() {
        let spec = WindowSpec::new(100, 3);
        let entries: Vec<(u64, i64, Option<String>)> =
            (1..=10).map(|s| (s, (s as i64) * 40, None)).collect();
        let mut live = WindowCutter::new(spec, 1);
        let mut live_sealed = Vec::new();
        for (seq, at, tp) in &entries {
            live.push(*seq, *at, tp.as_deref(), &mut live_sealed);
        }
        // Restart: the index holds the sealed windows, the log tail the open one.
        let last = live_sealed.last().expect("some windows sealed");
        let tail: Vec<_> = entries
            .iter()
            .filter(|e| e.0 > last.last_seq)
            .cloned()
            .collect();
        let (recovered, replay_sealed) = WindowCutter::recover(spec, Some(last.id), tail);
        assert!(replay_sealed.is_empty());
        assert_eq!(recovered, live);
    }

    #[test]
    fn recovery_keeps_an_old_open_window_whole_until_the_next_tick() {
        // The window was open under a longer window_ms; now it is long due.
        let spec = WindowSpec::new(200, 100);
        let tail = vec![(7, 1000, None), (8, 1500, None), (9, 9000, None)];
        let (mut c, sealed) = WindowCutter::recover(spec, Some(2), tail);
        assert!(sealed.is_empty());
        let w = c.tick(10_000).expect("due at once");
        assert_eq!(
            (w.id, w.first_seq, w.last_seq, w.opened_at_ms),
            (3, 7, 9, 1000)
        );
    }

    #[test]
    fn recovery_cuts_by_size_when_max_changes_was_lowered() {
        let spec = WindowSpec::new(1000, 2);
        let tail: Vec<_> = (4..=8).map(|s| (s, 0, None)).collect();
        let (c, sealed) = WindowCutter::recover(spec, Some(1), tail);
        assert_eq!(
            sealed
                .iter()
                .map(|w| (w.id, w.first_seq, w.last_seq))
                .collect::<Vec<_>>(),
            vec![(2, 4, 5), (3, 6, 7)]
        );
        let open = c.open_window().expect("remainder stays open");
        assert_eq!((open.id, open.first_seq, open.last_seq), (4, 8, 8));
    }
}

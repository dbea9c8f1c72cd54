//! The state keeper of one partition: a synchronous actor on its own thread
//! that owns the partition's SQLite connection and runs its computations, so
//! blocking SQLite work never stalls the async runtime.

use crate::state::{
    ComputeError, ComputeOutcome, HeldIntake, HoldStatus, NextHeld, PartitionState, SkipError,
    StateError,
};
use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use mdp_report::Engine;
use mdp_types::{Window, WindowId};
use std::path::PathBuf;
use std::sync::Arc;

/// Owns one partition's state file; opened on first use and reopened after a
/// failure (a deleted file, a full disk fixed by an operator).
pub struct StateKeeper {
    partition: u32,
    dir: PathBuf,
    engine: Arc<Engine>,
    state: Option<PartitionState>,
}

impl StateKeeper {
    /// Starts the keeper of `partition` on a dedicated thread.
    pub fn start(partition: u32, dir: PathBuf, engine: Arc<Engine>) -> Addr<Self> {
        SyncArbiter::start(1, move || StateKeeper {
            partition,
            dir: dir.clone(),
            engine: engine.clone(),
            state: None,
        })
    }

    fn state(&mut self) -> Result<&mut PartitionState, StateError> {
        let state = match self.state.take() {
            Some(state) => state,
            None => {
                let state = PartitionState::open(&self.dir, self.partition)?;
                tracing::info!(
                    partition = self.partition,
                    path = %state.path().display(),
                    "partition state opened"
                );
                state
            }
        };
        Ok(self.state.insert(state))
    }

    /// Runs `f` on the open state; a failure starts from a fresh connection
    /// next time.
    fn with_state<T, E: From<StateError>>(
        &mut self,
        f: impl FnOnce(&mut PartitionState) -> Result<T, E>,
        is_state_error: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        let result = self.state().map_err(E::from).and_then(f);
        if result.as_ref().err().is_some_and(is_state_error) {
            self.state = None;
        }
        result
    }
}

impl Actor for StateKeeper {
    type Context = SyncContext<Self>;
}

/// What became of delivered windows.
#[derive(Debug)]
pub enum Intake {
    /// Applied (or skipped as duplicates) in one transaction.
    Computed(ComputeOutcome),
    /// The partition is held (or still applying held windows): kept in the
    /// held store, in one transaction.
    Held(HeldIntake),
}

/// Delivered windows (in delivery order): applied in one transaction, or
/// kept in the held store while the partition holds windows.
#[derive(Message)]
#[rtype(result = "Result<Intake, ComputeError>")]
pub struct Compute {
    pub windows: Arc<[Arc<Window>]>,
    pub computed_at_ms: i64,
    /// The computation's span (entered on the keeper thread).
    pub span: tracing::Span,
}

fn is_state(e: &ComputeError) -> bool {
    matches!(e, ComputeError::State(_))
}

impl Handler<Compute> for StateKeeper {
    type Result = Result<Intake, ComputeError>;

    fn handle(&mut self, msg: Compute, _: &mut SyncContext<Self>) -> Self::Result {
        let _entered = msg.span.enter();
        let engine = self.engine.clone();
        self.with_state(
            |state| {
                if state.holding()? {
                    Ok(Intake::Held(state.hold_windows(&msg.windows[..])?))
                } else {
                    state
                        .compute(engine.as_ref(), &msg.windows[..], msg.computed_at_ms)
                        .map(Intake::Computed)
                }
            },
            is_state,
        )
    }
}

/// Apply windows taken from the held store in one transaction.
#[derive(Message)]
#[rtype(result = "Result<ComputeOutcome, ComputeError>")]
pub struct ComputeHeld {
    pub windows: Arc<[Arc<Window>]>,
    pub computed_at_ms: i64,
    pub span: tracing::Span,
}

impl Handler<ComputeHeld> for StateKeeper {
    type Result = Result<ComputeOutcome, ComputeError>;

    fn handle(&mut self, msg: ComputeHeld, _: &mut SyncContext<Self>) -> Self::Result {
        let _entered = msg.span.enter();
        let engine = self.engine.clone();
        self.with_state(
            |state| state.compute(engine.as_ref(), &msg.windows[..], msg.computed_at_ms),
            is_state,
        )
    }
}

fn always(_: &StateError) -> bool {
    true
}

/// The partition's committed hold.
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<HoldStatus, StateError>")]
pub struct ReadHold;

impl Handler<ReadHold> for StateKeeper {
    type Result = Result<HoldStatus, StateError>;

    fn handle(&mut self, _: ReadHold, _: &mut SyncContext<Self>) -> Self::Result {
        self.with_state(PartitionState::hold_status, always)
    }
}

/// The next held windows to apply (see [`PartitionState::next_held`]).
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<NextHeld, StateError>")]
pub struct NextHeldWindows {
    pub max_windows: usize,
    pub max_changes: usize,
}

impl Handler<NextHeldWindows> for StateKeeper {
    type Result = Result<NextHeld, StateError>;

    fn handle(&mut self, msg: NextHeldWindows, _: &mut SyncContext<Self>) -> Self::Result {
        self.with_state(
            |state| state.next_held(msg.max_windows, msg.max_changes),
            always,
        )
    }
}

/// Drop held and parked rows already applied (their batch is published).
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<HoldStatus, StateError>")]
pub struct ForgetApplied;

impl Handler<ForgetApplied> for StateKeeper {
    type Result = Result<HoldStatus, StateError>;

    fn handle(&mut self, _: ForgetApplied, _: &mut SyncContext<Self>) -> Self::Result {
        self.with_state(PartitionState::forget_applied, always)
    }
}

/// Record a parked window: the partition is held at it.
#[derive(Message, Clone)]
#[rtype(result = "Result<HoldStatus, StateError>")]
pub struct Park {
    pub window_id: WindowId,
    pub reason: String,
    pub at_ms: i64,
}

impl Handler<Park> for StateKeeper {
    type Result = Result<HoldStatus, StateError>;

    fn handle(&mut self, msg: Park, _: &mut SyncContext<Self>) -> Self::Result {
        self.with_state(
            |state| state.park(msg.window_id, &msg.reason, msg.at_ms),
            always,
        )
    }
}

/// An operator drops the parked window the partition is held at.
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<HoldStatus, SkipError>")]
pub struct SkipParked {
    pub window_id: WindowId,
}

impl Handler<SkipParked> for StateKeeper {
    type Result = Result<HoldStatus, SkipError>;

    fn handle(&mut self, msg: SkipParked, _: &mut SyncContext<Self>) -> Self::Result {
        self.with_state(
            |state| state.skip_parked(msg.window_id),
            |e| matches!(e, SkipError::State(_)),
        )
    }
}

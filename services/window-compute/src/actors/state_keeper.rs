//! The state keeper of one partition: a synchronous actor on its own thread
//! that owns the partition's SQLite connection and runs its computations, so
//! blocking SQLite work never stalls the async runtime.

use crate::state::{ComputeError, ComputeOutcome, PartitionState, StateError};
use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use mdp_report::Engine;
use mdp_types::Window;
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
}

impl Actor for StateKeeper {
    type Context = SyncContext<Self>;
}

/// Apply windows (in delivery order) in one transaction.
#[derive(Message)]
#[rtype(result = "Result<ComputeOutcome, ComputeError>")]
pub struct Compute {
    pub windows: Arc<[Arc<Window>]>,
    pub computed_at_ms: i64,
    /// The computation's span (entered on the keeper thread).
    pub span: tracing::Span,
}

impl Handler<Compute> for StateKeeper {
    type Result = Result<ComputeOutcome, ComputeError>;

    fn handle(&mut self, msg: Compute, _: &mut SyncContext<Self>) -> Self::Result {
        let _entered = msg.span.enter();
        let engine = self.engine.clone();
        let result = self
            .state()
            .map_err(ComputeError::from)
            .and_then(|state| state.compute(engine.as_ref(), &msg.windows[..], msg.computed_at_ms));
        if matches!(result, Err(ComputeError::State(_))) {
            // Start from a fresh connection next time.
            self.state = None;
        }
        result
    }
}

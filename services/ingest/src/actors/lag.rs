//! The lag monitor: once a second asks the source for the end of its binlog
//! and publishes how far the saved position is behind it.

use crate::cdc::source::{self, lag_bytes};
use crate::metrics;
use crate::state::IngestState;
use actix::prelude::*;
use mdp_service::ServiceContext;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);

/// See the module documentation.
pub struct LagMonitor {
    ctx: ServiceContext,
    state: IngestState,
    pool: mysql_async::Pool,
    busy: bool,
}

impl LagMonitor {
    pub fn new(ctx: ServiceContext, state: IngestState, opts: mysql_async::Opts) -> Self {
        let pool_opts = mysql_async::PoolOpts::default()
            .with_constraints(mysql_async::PoolConstraints::new(0, 1).unwrap_or_default());
        let opts = mysql_async::OptsBuilder::from_opts(opts).pool_opts(pool_opts);
        LagMonitor {
            ctx,
            state,
            pool: mysql_async::Pool::new(opts),
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ctx.cancel.is_cancelled() {
            ctx.stop();
            return;
        }
        if self.busy {
            return;
        }
        self.busy = true;
        let pool = self.pool.clone();
        let fut = async move {
            let mut conn = pool
                .get_conn()
                .await
                .map_err(source::SourceError::Connect)?;
            let end = source::master_status(&mut conn).await?;
            let logs = source::binary_logs(&mut conn).await?;
            Ok::<_, source::SourceError>((end, logs))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.busy = false;
            match result {
                Ok((end, logs)) => {
                    let lag = act.state.saved().map(|s| lag_bytes(&s.position, &end, &logs));
                    if let Some(lag) = lag {
                        metrics::BINLOG_LAG_BYTES.set(i64::try_from(lag).unwrap_or(i64::MAX));
                        act.ctx.stats.set("binlog_lag_bytes", lag as f64);
                    }
                    act.state.set_source_end(end, lag);
                }
                // The reader reports source outages; this is only a gauge.
                Err(e) => tracing::debug!(error = %mdp_telemetry::error_chain(&e), "binlog lag check failed"),
            }
        }));
    }
}

impl Actor for LagMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(INTERVAL, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let pool = self.pool.clone();
        actix::spawn(async move {
            let _ = pool.disconnect().await;
        });
    }
}

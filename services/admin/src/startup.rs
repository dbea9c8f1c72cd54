//! Builds and runs the admin application: HTTP server, the bus actor that
//! consumes heartbeats and publishes control commands, the partition lag
//! watch, the dead-letter queue watch, and admin's own heartbeat.

use crate::actors::bus::BusActor;
use crate::domain::command::KnownMachines;
use crate::domain::dead_letters::DeadLetterWatch;
use crate::domain::instances::{InstanceRecord, InstanceTable};
use crate::domain::partitions::{partition_views, LagRule, LagWatch, PartitionView};
use crate::domain::status::{aggregate, FleetStatus, Observation};
use crate::domain::switches::Switches;
use crate::domain::EXPECTED_SERVICES;
use crate::routes;
use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use mdp_amqp::Topology;
use mdp_config::Settings;
use mdp_service::ServiceContext;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The service name admin reports under.
pub const SERVICE: &str = "admin";
/// How often the partition lag is recomputed without a status request.
const LAG_EVERY: Duration = Duration::from_secs(1);

fn lag_gauge() -> prometheus::IntGaugeVec {
    mdp_telemetry::int_gauge_vec(
        "mdp_admin_partition_lag_windows",
        "Windows sealed by flow-control and not yet applied by window-compute, per partition (absent while unknown).",
        &["partition"],
    )
}

/// Errors starting admin.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("failed to bind the HTTP listener on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the routes share: the instance table and the bus.
pub struct AdminState {
    pub table: InstanceTable,
    /// Overrides in force, re-sent to instances that lack them.
    pub switches: Switches,
    pub bus: Addr<BusActor>,
    pub heartbeat_timeout_ms: i64,
    /// When admin started: the `since` of alarms about never-seen services.
    pub watching_since_ms: i64,
    /// Exchange and queue names (`rabbitmq.prefix`, `partitioning.partitions`).
    pub topology: Topology,
    /// When a lagging partition raises an alarm.
    pub lag: LagRule,
    /// Since when partitions lag.
    pub lag_watch: LagWatch,
    /// How many messages each dead-letter queue held when last looked at.
    pub dead_letters: DeadLetterWatch,
}

impl AdminState {
    /// The fleet status as of now.
    pub fn fleet_status(&self) -> FleetStatus {
        let snapshot = self.table.snapshot();
        let now_ms = mdp_types::now_ms();
        let lagging_since = self.observe_partitions(&snapshot, now_ms);
        let dead_letters = self.dead_letters.snapshot();
        let mut status = aggregate(
            &snapshot,
            Observation {
                now_ms,
                heartbeat_timeout_ms: self.heartbeat_timeout_ms,
                expected: &EXPECTED_SERVICES,
                watching_since_ms: self.watching_since_ms,
                partitions: self.topology.partitions,
                lag: self.lag,
                lagging_since: &lagging_since,
                dead_letters: &dead_letters,
            },
        );
        status.switches = self.switches.list();
        status
    }

    /// Recomputes the lag of every partition: exports it as
    /// `mdp_admin_partition_lag_windows` and updates since when partitions
    /// lag (returned).
    fn observe_partitions(&self, snapshot: &[InstanceRecord], now_ms: i64) -> BTreeMap<u32, i64> {
        let views = partition_views(
            snapshot,
            now_ms,
            self.heartbeat_timeout_ms,
            self.topology.partitions,
        );
        export_lag(&views);
        self.lag_watch.observe(&views, self.lag, now_ms)
    }

    /// Services commands may address (expected or seen) and the machines
    /// their live instances report.
    pub fn known_machines(&self) -> KnownMachines {
        let now = mdp_types::now_ms();
        let mut known = KnownMachines {
            services: EXPECTED_SERVICES.iter().map(|s| s.to_string()).collect(),
            machines: Default::default(),
        };
        for rec in self.table.snapshot() {
            let hb = rec.heartbeat;
            known.services.insert(hb.service.clone());
            if now.saturating_sub(rec.received_at_ms) <= self.heartbeat_timeout_ms {
                known
                    .machines
                    .entry(hb.service)
                    .or_default()
                    .extend(hb.degrade.into_iter().map(|d| d.machine));
            }
        }
        known
    }
}

fn export_lag(views: &[PartitionView]) {
    let gauge = lag_gauge();
    for view in views {
        let partition = view.partition.to_string();
        match view.lag_windows {
            Some(lag) => gauge
                .with_label_values(&[&partition])
                .set(i64::try_from(lag).unwrap_or(i64::MAX)),
            // Unknown is no series rather than a made-up 0.
            None => {
                let _ = gauge.remove_label_values(&[&partition]);
            }
        }
    }
}

/// Keeps the lag gauge and the lagging times current between status requests.
async fn watch_partitions(state: web::Data<AdminState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                state.observe_partitions(&state.table.snapshot(), mdp_types::now_ms());
            }
        }
    }
}

/// Keeps the dead-letter queue depths (the `dead_letters_parked` alarm)
/// current: one look every [`crate::dead_letters::DEPTH_EVERY`].
async fn watch_dead_letters(state: web::Data<AdminState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(crate::dead_letters::DEPTH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let observe =
            crate::dead_letters::observe_depths(&state.bus, &state.topology, &state.dead_letters);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = observe => {}
        }
    }
}

/// The admin service, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    ctx: ServiceContext,
}

impl Application {
    /// Binds `admin.listen` (port 0 picks a free port), starts the bus actor
    /// and admin's own heartbeat. Must be called inside an actix system.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listen = settings.admin.listen.clone();
        let listener = TcpListener::bind(&listen).map_err(|source| StartupError::Bind {
            addr: listen.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: listen.clone(),
            source,
        })?;
        let heartbeat_timeout_ms =
            i64::try_from(settings.admin.heartbeat_timeout_ms).unwrap_or(i64::MAX);
        let lag = LagRule {
            threshold_windows: settings.admin.lag_alarm_windows,
            alarm_after_ms: i64::try_from(settings.admin.lag_alarm_after_ms).unwrap_or(i64::MAX),
        };
        let topology = Topology::from_settings(&settings);

        let ctx = ServiceContext::new(SERVICE, settings);
        ctx.set_http_addr(addr);
        let table = InstanceTable::default();
        let switches = Switches::default();
        let bus = BusActor::new(ctx.clone(), table.clone(), switches.clone()).start();
        mdp_service::spawn_heartbeat(ctx.clone());
        crate::dead_letters::init_metrics();

        let state = web::Data::new(AdminState {
            table,
            switches,
            bus,
            heartbeat_timeout_ms,
            watching_since_ms: ctx.started_at_ms,
            topology,
            lag,
            lag_watch: LagWatch::default(),
            dead_letters: DeadLetterWatch::default(),
        });
        actix_web::rt::spawn(watch_partitions(state.clone(), ctx.cancel.clone()));
        actix_web::rt::spawn(watch_dead_letters(state.clone(), ctx.cancel.clone()));
        let ctx_data = web::Data::new(ctx.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(ctx_data.clone())
                .configure(mdp_service::health_routes)
                .route("/v1/status", web::get().to(routes::status::fleet_status))
                .route("/v1/instance", web::get().to(mdp_service::status))
                .route("/v1/alarms", web::get().to(routes::alarms::alarms))
                .route(
                    "/v1/degrade/{service}/{machine}",
                    web::post().to(routes::degrade::degrade),
                )
                .route(
                    "/v1/dead-letters",
                    web::get().to(routes::dead_letters::list),
                )
                .route(
                    "/v1/dead-letters/{stage}/replay",
                    web::post().to(routes::dead_letters::replay),
                )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: listen,
            source,
        })?
        .run();
        tracing::info!(addr = %addr, instance = %ctx.instance, "admin listening");
        Ok(Application {
            port: addr.port(),
            server,
            ctx,
        })
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's context (identity, settings, cancellation).
    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// Cancelling it stops the server and the actors.
    pub fn cancel_token(&self) -> CancellationToken {
        self.ctx.cancel.clone()
    }

    /// Serves until the cancellation token fires, then stops gracefully.
    pub async fn run(self) -> std::io::Result<()> {
        let served = mdp_service::serve_until_cancelled(self.server, &self.ctx.cancel).await;
        tracing::info!("admin stopped");
        served
    }
}

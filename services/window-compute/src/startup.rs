//! Building and running the service: load reports, bind HTTP, start the state
//! keepers, the RabbitMQ supervisor and the heartbeat.

use crate::actors::state_keeper::StateKeeper;
use crate::actors::supervisor::{Supervisor, SupervisorConfig};
use crate::board::PartitionBoard;
use crate::configuration::ComputeOptions;
use crate::events::{self, ReportRejected};
use crate::routes;
use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use mdp_amqp::Topology;
use mdp_config::Settings;
use mdp_degrade::{DegradeMachine, Policy};
use mdp_report::{Engine, ReportError, ReportSet, TenantColumns};
use mdp_service::ServiceContext;
use std::net::TcpListener;
use std::sync::Arc;

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("failed to read the reports directory")]
    Reports(#[source] ReportError),
    #[error("failed to create the state directory {path}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to bind the HTTP listener to {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A built, not yet running, window-compute instance.
pub struct Application {
    port: u16,
    server: Server,
    ctx: ServiceContext,
    supervisor: SupervisorConfig,
    reports: Arc<ReportSet>,
}

impl Application {
    /// Builds the service with the options derived from `settings`.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let options = ComputeOptions::from_settings(&settings);
        Self::build_with(settings, options).await
    }

    /// Builds the service with explicit compute options (tests shorten the
    /// retry backoff).
    pub async fn build_with(
        settings: Settings,
        options: ComputeOptions,
    ) -> Result<Self, StartupError> {
        events::register();
        let ctx = ServiceContext::new(crate::SERVICE, settings);
        let settings = ctx.settings.clone();

        let tenants = TenantColumns::from_settings(&settings.source);
        let reports = Arc::new(
            ReportSet::load_dir(&settings.reports.dir, &tenants).map_err(StartupError::Reports)?,
        );
        for r in reports.rejected() {
            ReportRejected {
                file: &r.file,
                error: &r.error,
            }
            .emit();
        }
        events::reports_rejected(reports.rejected().len());
        tracing::info!(
            dir = %settings.reports.dir.display(),
            reports = ?reports.reports().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            rejected = reports.rejected().len(),
            "reports loaded"
        );

        std::fs::create_dir_all(&options.state_dir).map_err(|source| StartupError::StateDir {
            path: options.state_dir.display().to_string(),
            source,
        })?;
        let engine = Arc::new(Engine::new(reports.clone()));
        if !engine.row_tables().is_empty() {
            // Reports with joins keep the rows of these tables in the state.
            tracing::info!(
                row_tables = ?engine.row_tables(),
                row_indexes = ?engine
                    .required_indexes()
                    .iter()
                    .map(|i| format!("{}.{}", i.table, i.column))
                    .collect::<Vec<_>>(),
                "row state kept for reports with joins"
            );
            let rolled_up: Vec<String> = reports
                .reports()
                .iter()
                .filter_map(|r| {
                    engine
                        .rolled_up(&r.name)
                        .map(|t| format!("{}: {t}", r.name))
                })
                .collect();
            // Changes of these tables' rows move sub-aggregates instead of
            // re-joining fact rows.
            tracing::info!(rolled_up = ?rolled_up, "dimensions rolled up");
        }
        let keepers: Arc<Vec<Addr<StateKeeper>>> = Arc::new(
            (0..options.partitions)
                .map(|p| StateKeeper::start(p, options.state_dir.clone(), engine.clone()))
                .collect(),
        );

        let rabbit = DegradeMachine::new(crate::SERVICE, "rabbitmq", Policy::default());
        let state_machine = DegradeMachine::new(crate::SERVICE, "state", Policy::default());
        ctx.degrade.register(rabbit.clone());
        ctx.degrade.register(state_machine.clone());
        ctx.readiness.set("state", Ok(()));

        let board = PartitionBoard::default();
        let addr = settings.window_compute.listen.clone();
        let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
        ctx.set_http_addr(local);
        let server = {
            let ctx = web::Data::new(ctx.clone());
            let reports = web::Data::new(reports.clone());
            let board = web::Data::new(board.clone());
            let keepers = web::Data::from(keepers.clone());
            HttpServer::new(move || {
                App::new()
                    .app_data(ctx.clone())
                    .app_data(reports.clone())
                    .app_data(board.clone())
                    .app_data(keepers.clone())
                    .configure(mdp_service::common_routes)
                    .configure(routes::configure)
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .map_err(|source| StartupError::Bind { addr, source })?
            .run()
        };

        let supervisor = SupervisorConfig {
            ctx: ctx.clone(),
            topology: Topology::from_settings(&settings),
            options,
            keepers,
            board,
            rabbit,
            state_machine,
        };
        Ok(Application {
            port: local.port(),
            server,
            ctx,
            supervisor,
            reports,
        })
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's context (cancel it to stop [`run`](Self::run)).
    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The loaded report set.
    pub fn reports(&self) -> &Arc<ReportSet> {
        &self.reports
    }

    /// Runs until the context is cancelled (or the HTTP server fails), then
    /// stops the consumers, closes the RabbitMQ connection and the server.
    pub async fn run(self) -> std::io::Result<()> {
        let ctx = self.ctx.clone();
        let (supervisor, supervisor_done) = Supervisor::new(self.supervisor);
        supervisor.start();
        // Kept for the lifetime of the service; the heartbeat stops on cancel.
        let _heartbeat = mdp_service::spawn_heartbeat(ctx.clone());

        let result = mdp_service::serve_until_cancelled(self.server, &ctx.cancel).await;
        // Completes once the consumers stopped and the connection is closed.
        let _ = supervisor_done.await;
        tracing::info!("window-compute stopped");
        result
    }
}

//! Wiring: builds the application (HTTP server bound, position store open)
//! and runs its actors until shutdown.

use crate::actors::{BatchPublisher, LagMonitor, PublisherTask, ReaderTask, SourceReader};
use crate::configuration::{ConfigurationError, IngestConfig};
use crate::state::IngestState;
use crate::store::{PositionStore, SavedPosition, StoreError};
use crate::{metrics, routes, SERVICE};
use actix::Actor;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use mdp_amqp::Topology;
use mdp_config::Settings;
use mdp_degrade::{DegradeMachine, Policy};
use mdp_service::ServiceContext;
use std::net::TcpListener;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Degrade machine of the RabbitMQ publish path.
pub const MACHINE_RABBITMQ: &str = "rabbitmq";
/// Degrade machine of the source database connection.
pub const MACHINE_SOURCE: &str = "source";

/// Errors building or running the application.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Configuration(#[from] ConfigurationError),
    #[error("failed to create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Server(#[source] std::io::Error),
}

/// A built ingest instance: HTTP bound, not yet capturing.
pub struct Application {
    port: u16,
    server: Server,
    ctx: ServiceContext,
    cfg: Arc<IngestConfig>,
    store: PositionStore,
    saved: Option<SavedPosition>,
    state: IngestState,
}

impl Application {
    /// Validates settings, opens the position store and binds the HTTP listener
    /// (`ingest.listen`; port 0 picks a free port, see [`Application::port`]).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let cfg = Arc::new(IngestConfig::from_settings(&settings)?);
        metrics::init();
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartupError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        let store = PositionStore::open(&cfg.data_dir, &cfg.source_identity())?;
        let saved = store.load()?;
        let state = IngestState::new(saved.clone());

        let listen = settings.ingest.listen.clone();
        let ctx = ServiceContext::new(SERVICE, settings);
        for machine in [MACHINE_RABBITMQ, MACHINE_SOURCE] {
            ctx.degrade
                .register(DegradeMachine::new(SERVICE, machine, Policy::default()));
        }

        let listener = TcpListener::bind(&listen).map_err(|source| StartupError::Bind {
            addr: listen.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: listen.clone(),
            source,
        })?;
        ctx.set_http_addr(addr);
        let data_ctx = web::Data::new(ctx.clone());
        let data_state = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data_ctx.clone())
                .app_data(data_state.clone())
                .configure(mdp_service::common_routes)
                .configure(routes::configure)
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

        tracing::info!(
            addr = %addr,
            database = %cfg.database,
            tables = ?cfg.tables,
            partitions = cfg.partitions,
            saved = ?saved.as_ref().map(|s| s.position.to_string()),
            "ingest built"
        );
        Ok(Application {
            port: addr.port(),
            server,
            ctx,
            cfg,
            store,
            saved,
            state,
        })
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling it stops the application ([`Application::run`] returns).
    pub fn cancel_token(&self) -> CancellationToken {
        self.ctx.cancel.clone()
    }

    /// The service context (readiness, degrade machines, stats).
    pub fn context(&self) -> ServiceContext {
        self.ctx.clone()
    }

    /// Starts capturing and serves HTTP until the cancel token fires or the server fails.
    /// Must run inside an actix system (`actix_web::main`, `actix_rt`).
    pub async fn run(self) -> Result<(), StartupError> {
        let Application {
            server,
            ctx,
            cfg,
            store,
            saved,
            state,
            ..
        } = self;
        let settings = ctx.settings.clone();
        let machine = |name: &str| {
            ctx.degrade
                .get(name)
                .unwrap_or_else(|| DegradeMachine::new(SERVICE, name, Policy::default()))
        };
        let capacity = (cfg.batch_max_events * 2).max(1024);
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);

        let publisher = BatchPublisher::new(PublisherTask {
            ctx: ctx.clone(),
            rx,
            store,
            state: state.clone(),
            machine: machine(MACHINE_RABBITMQ),
            topology: Topology::from_settings(&settings),
            amqp_url: settings.rabbitmq.url.expose().to_string(),
            partitions: cfg.partitions,
            batch_max_events: cfg.batch_max_events,
            batch_max_wait: cfg.batch_max_wait,
        })
        .start();
        let reader = SourceReader::new(ReaderTask {
            ctx: ctx.clone(),
            cfg: cfg.clone(),
            tx,
            state: state.clone(),
            machine: machine(MACHINE_SOURCE),
            saved,
        })
        .start();
        let lag = LagMonitor::new(ctx.clone(), state, cfg.source_opts.clone()).start();
        let heartbeat = mdp_service::spawn_heartbeat(ctx.clone());

        let result = mdp_service::serve_until_cancelled(server, &ctx.cancel)
            .await
            .map_err(StartupError::Server);
        // The actors watch the token and stop by themselves; wait for them so a
        // restart in the same process never overlaps with this instance.
        for _ in 0..100 {
            if !reader.connected()
                && !publisher.connected()
                && !lag.connected()
                && !heartbeat.connected()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::info!("ingest stopped");
        result
    }
}

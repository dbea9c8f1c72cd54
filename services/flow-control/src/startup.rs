//! Builds and runs a flow-control instance: recovers every partition from the KV log,
//! starts the actors and the HTTP server, and stops them all on the cancellation token.

use crate::actors::intake::{IntakeActor, IntakeSetup};
use crate::actors::partition::{PartitionActor, PartitionSetup};
use crate::actors::publisher::{PublishWindow, WindowPublisher};
use crate::broker::BrokerLink;
use crate::configuration::{ConfigurationError, FlowConfig, Settings};
use crate::log::{KvLog, LogError, WindowRecord, WindowState};
use crate::rate_limit::{RateLimiter, RateMeter};
use crate::routes::{self, RouteState};
use crate::status::StatusBoard;
use crate::window::WindowCutter;
use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use mdp_amqp::Topology;
use mdp_degrade::{DegradeMachine, Policy};
use mdp_service::ServiceContext;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The service name in heartbeats, control commands and metrics.
pub const SERVICE: &str = "flow-control";

/// Errors starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration")]
    Configuration(#[from] ConfigurationError),
    #[error("failed to create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the kv log in {path}")]
    OpenLog {
        path: PathBuf,
        #[source]
        source: LogError,
    },
    #[error("failed to recover partition {partition} from the kv log")]
    Recover {
        partition: u32,
        #[source]
        source: LogError,
    },
    #[error("failed to listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the http server failed")]
    Server(#[source] std::io::Error),
}

/// A built flow-control instance: recovered, actors running, HTTP bound.
pub struct Application {
    port: u16,
    server: Server,
    ctx: ServiceContext,
    link: Arc<BrokerLink>,
}

impl Application {
    /// Recovers the KV log, starts the actors and binds the HTTP listener
    /// (port 0 picks a free port). Must run inside an actix system.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let config = FlowConfig::from_settings(&settings)?;
        let ctx = ServiceContext::new(SERVICE, settings);
        build(config, ctx).await
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's context (stats, degrade machines, owned partitions).
    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// Cancelling this token stops the instance; [`Application::run`] then returns.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.cancel.clone()
    }

    /// Serves until the shutdown token is cancelled (or the server fails).
    pub async fn run(self) -> Result<(), StartupError> {
        let cancel = self.ctx.cancel.clone();
        let result = mdp_service::serve_until_cancelled(self.server, &cancel)
            .await
            .map_err(StartupError::Server);
        self.link.close().await;
        tracing::info!("flow-control stopped");
        result
    }
}

async fn build(config: FlowConfig, ctx: ServiceContext) -> Result<Application, StartupError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartupError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let log = KvLog::open(&config.data_dir).map_err(|source| StartupError::OpenLog {
        path: config.data_dir.clone(),
        source,
    })?;

    let rabbitmq = DegradeMachine::new(SERVICE, "rabbitmq", Policy::default());
    let kv = DegradeMachine::new(SERVICE, "kv", Policy::default());
    ctx.degrade.register(rabbitmq.clone());
    ctx.degrade.register(kv.clone());
    ctx.readiness.set("kv", Ok(()));
    ctx.readiness.set("rabbitmq", Err("connecting".into()));

    let topology = Topology::from_settings(&ctx.settings);
    let url = ctx.settings.rabbitmq.url.expose().to_string();
    let board = StatusBoard::new(config.partitions, ctx.stats.clone());
    let meter = Arc::new(RateMeter::default());
    let link = Arc::new(BrokerLink::new(
        url.clone(),
        format!("{} windows", ctx.instance),
        topology.clone(),
        ctx.cancel.clone(),
        rabbitmq.clone(),
        ctx.readiness.clone(),
    ));

    let mut partitions = Vec::with_capacity(config.partitions as usize);
    for p in 0..config.partitions {
        let recovered = log.recover(p).map_err(|source| StartupError::Recover {
            partition: p,
            source,
        })?;
        let last_closed_id = recovered.last_closed.as_ref().map(|w| w.id);
        let (cutter, resealed) =
            WindowCutter::recover(config.window, last_closed_id, recovered.tail);
        let resealed: Vec<WindowRecord> = resealed
            .iter()
            .map(|w| WindowRecord::sealed(p, w))
            .collect();
        if !resealed.is_empty() {
            log.put_windows(&resealed)
                .map_err(|source| StartupError::Recover {
                    partition: p,
                    source,
                })?;
            log.flush().await.map_err(|source| StartupError::Recover {
                partition: p,
                source,
            })?;
        }
        let last_published = match recovered.unpublished.first() {
            Some(first) => first.id.checked_sub(1).filter(|id| *id > 0),
            None => recovered
                .last_closed
                .as_ref()
                .filter(|w| w.state == WindowState::Published)
                .map(|w| w.id),
        };
        board.recovered(
            p,
            last_published,
            resealed.last().map(|w| w.id).or(last_closed_id),
        );
        let pending: Vec<WindowRecord> =
            recovered.unpublished.into_iter().chain(resealed).collect();
        if !pending.is_empty() || cutter.open_window().is_some() {
            tracing::info!(
                partition = p,
                next_seq = recovered.meta.next_seq,
                unpublished = pending.len(),
                open_window = cutter.open_window().map(|w| w.id),
                open_changes = cutter.open_window().map_or(0, |w| w.changes()),
                "partition recovered"
            );
        }

        let publisher = WindowPublisher::new(
            p,
            log.clone(),
            link.clone(),
            &topology,
            board.clone(),
            kv.clone(),
            rabbitmq.clone(),
            ctx.clone(),
        )
        .start();
        for record in pending {
            board.sealed(
                p,
                record.id,
                record.sealed_at_ms.unwrap_or(record.opened_at_ms),
            );
            publisher.do_send(PublishWindow(record));
        }
        let actor = PartitionActor::new(PartitionSetup {
            partition: p,
            log: log.clone(),
            meta: recovered.meta,
            cutter,
            publisher,
            board: board.clone(),
            meter: meter.clone(),
            kv: kv.clone(),
            ctx: ctx.clone(),
            tick: config.tick,
        })
        .start();
        partitions.push(actor);
    }

    // Connect the window publisher now rather than at the first sealed window.
    let warm = link.clone();
    actix::spawn(async move {
        let _ = warm.publisher().await;
    });

    IntakeActor::new(IntakeSetup {
        config: config.clone(),
        url,
        topology,
        partitions,
        limiter: RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst),
        meter,
        rabbitmq,
        ctx: ctx.clone(),
    })
    .start();
    mdp_service::spawn_heartbeat(ctx.clone());

    let listener = TcpListener::bind(&config.listen).map_err(|source| StartupError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    ctx.set_http_addr(addr);
    let ctx_data = web::Data::new(ctx.clone());
    let route_state = web::Data::new(RouteState {
        log,
        board,
        owned: ctx.partitions.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(ctx_data.clone())
            .app_data(route_state.clone())
            .configure(mdp_service::common_routes)
            .configure(routes::configure)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(|source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    })?
    .run();
    tracing::info!(
        http_addr = %addr,
        partitions = config.partitions,
        window_ms = config.window.window_ms,
        window_max_changes = config.window.max_changes,
        data_dir = %config.data_dir.display(),
        "flow-control started"
    );
    Ok(Application {
        port: addr.port(),
        server,
        ctx,
        link,
    })
}

//! Wiring: settings → stores, degrade machines, HTTP server and actors.

use crate::actors::{
    AmqpLink, CacheRebuilder, Notifier, PartitionStatuses, PartitionWriter, PartitionWriterConfig,
    StaleCount,
};
use crate::cache::Cache;
use crate::configuration::{ConfigError, WriterConfig, MYSQL_MACHINE, REDIS_MACHINE, SERVICE};
use crate::routes::{self, WriterStatusState};
use crate::store::Store;
use crate::writer::Writer;
use actix::Actor;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use mdp_amqp::Topology;
use mdp_config::Settings;
use mdp_degrade::{DegradeMachine, Policy};
use mdp_report::{ReportSet, TenantColumns};
use mdp_service::ServiceContext;
use std::net::TcpListener;
use std::sync::Arc;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("failed to bind {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A built, not yet running writer.
pub struct Application {
    port: u16,
    server: Server,
    ctx: ServiceContext,
    writer: Arc<Writer>,
    config: WriterConfig,
    statuses: PartitionStatuses,
    stale: StaleCount,
}

impl Application {
    /// Loads the reports, prepares the (lazy) MySQL and Redis clients and
    /// binds the HTTP listener (`result_writer.listen`; port 0 picks one).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let config = WriterConfig::from_settings(&settings);
        let tenants = TenantColumns::from_settings(&settings.source);
        let reports = ReportSet::load_dir(&config.reports_dir, &tenants).map_err(|source| {
            ConfigError::Reports {
                dir: config.reports_dir.clone(),
                source,
            }
        })?;
        for rejected in reports.rejected() {
            tracing::warn!(
                file = %rejected.file.display(),
                error = %rejected.error,
                "report definition rejected"
            );
        }
        tracing::info!(
            dir = %config.reports_dir.display(),
            reports = ?reports.reports().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            "reports loaded"
        );
        let store = Store::new(
            settings.results.url.expose(),
            settings.results.max_connections,
        )?;
        let cache = Cache::new(settings.redis.url.expose(), &settings.redis.key_prefix).map_err(
            |e| match e {
                crate::cache::CacheError::Config(e) | crate::cache::CacheError::Unavailable(e) => {
                    ConfigError::RedisUrl(e)
                }
            },
        )?;

        let ctx = ServiceContext::new(SERVICE, settings);
        let mysql = DegradeMachine::new(SERVICE, MYSQL_MACHINE, Policy::default());
        let redis = DegradeMachine::new(SERVICE, REDIS_MACHINE, Policy::default());
        ctx.degrade.register(mysql.clone());
        ctx.degrade.register(redis.clone());
        let writer = Arc::new(Writer::new(store, cache, Arc::new(reports), mysql, redis));

        let listener = TcpListener::bind(&config.listen).map_err(|source| StartupError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        ctx.set_http_addr(local);
        let statuses = PartitionStatuses::default();
        let stale = StaleCount::default();
        let server = {
            let ctx = web::Data::new(ctx.clone());
            let state = web::Data::new(WriterStatusState {
                partitions: statuses.clone(),
                stale: stale.clone(),
            });
            HttpServer::new(move || {
                App::new()
                    .app_data(ctx.clone())
                    .app_data(state.clone())
                    .configure(routes::configure)
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: config.listen.clone(),
                source,
            })?
            .run()
        };
        Ok(Application {
            port: local.port(),
            server,
            ctx,
            writer,
            config,
            statuses,
            stale,
        })
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service context (cancel it to stop the service).
    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// Starts the RabbitMQ link, one writer per partition, the cache
    /// rebuilder and the heartbeat; runs until the context is cancelled or
    /// the HTTP server fails.
    pub async fn run(self) -> std::io::Result<()> {
        let ctx = self.ctx.clone();
        let topology = Topology::from_settings(&ctx.settings);
        let (link, link_rx) = AmqpLink::new(
            ctx.settings.rabbitmq.url.expose(),
            topology.clone(),
            ctx.clone(),
        );
        link.start();
        let notifier = Notifier::new(link_rx.clone(), topology.notices_exchange()).start();
        for partition in 0..self.config.partitions {
            let config = PartitionWriterConfig {
                partition,
                queue: topology.results_queue(partition),
                consumer_tag: format!("{}-p{partition}", ctx.instance),
                prefetch: self.config.prefetch,
                max_message_bytes: self.config.max_message_bytes,
            };
            PartitionWriter::new(
                config,
                self.writer.clone(),
                link_rx.clone(),
                notifier.clone().recipient(),
                ctx.clone(),
                self.statuses.get(partition),
            )
            .start();
        }
        CacheRebuilder::new(self.writer.clone(), ctx.clone(), self.stale.clone()).start();
        mdp_service::spawn_heartbeat(ctx.clone());

        let result = mdp_service::serve_until_cancelled(self.server, &ctx.cancel).await;
        tracing::info!("result-writer stopped");
        result
    }
}

//! Wiring: settings → report definitions, Redis and MySQL readers, degrade
//! machines, the change notices listener and the HTTP server.

use crate::configuration::{QueryConfig, MYSQL_MACHINE, REDIS_MACHINE, SERVICE};
use crate::notices::{ChangeMarks, NoticeListener};
use crate::service::RowsService;
use crate::sources::{HotCache, HotError, ReportTables, TableError};
use crate::state::QueryState;
use crate::{events, routes};
use actix::Actor;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use mdp_config::Settings;
use mdp_degrade::{DegradeMachine, Policy};
use mdp_report::{ReportSet, TenantColumns};
use mdp_service::ServiceContext;
use std::net::TcpListener;
use std::sync::Arc;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("failed to read the reports directory")]
    Reports(#[source] mdp_report::ReportError),
    #[error("redis.url cannot be used")]
    Redis(#[source] HotError),
    #[error("results.url cannot be used")]
    Mysql(#[source] TableError),
    #[error("failed to bind {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A built, not yet running query service.
pub struct Application {
    port: u16,
    server: Server,
    ctx: ServiceContext,
    marks: Arc<ChangeMarks>,
}

impl Application {
    /// Loads the reports, prepares the (lazy) Redis and MySQL readers and
    /// binds `query.listen` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        events::register();
        let config = QueryConfig::from_settings(&settings);
        let tenants = TenantColumns::from_settings(&settings.source);
        let reports = Arc::new(
            ReportSet::load_dir(&config.reports_dir, &tenants).map_err(StartupError::Reports)?,
        );
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
        let hot = HotCache::new(settings.redis.url.expose(), &settings.redis.key_prefix)
            .map_err(StartupError::Redis)?;
        let tables = ReportTables::new(settings.results.url.expose(), config.max_connections)
            .map_err(StartupError::Mysql)?;

        let ctx = ServiceContext::new(SERVICE, settings);
        let redis = DegradeMachine::new(SERVICE, REDIS_MACHINE, Policy::default());
        let mysql = DegradeMachine::new(SERVICE, MYSQL_MACHINE, Policy::default());
        ctx.degrade.register(redis.clone());
        ctx.degrade.register(mysql.clone());
        let marks = Arc::new(ChangeMarks::default());
        let state = web::Data::new(QueryState {
            reports,
            rows: RowsService::new(hot, tables, redis, mysql, config.cache_ttl, marks.clone()),
            page_size: config.page_size,
            partitions: config.partitions,
        });

        let listener = TcpListener::bind(&config.listen).map_err(|source| StartupError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        ctx.set_http_addr(local);
        let server = {
            let ctx = web::Data::new(ctx.clone());
            HttpServer::new(move || {
                App::new()
                    .app_data(ctx.clone())
                    .app_data(state.clone())
                    .configure(routes::configure)
            })
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
            marks,
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

    /// Starts the heartbeat and the change notices listener and serves
    /// until the context is cancelled or the HTTP server fails.
    pub async fn run(self) -> std::io::Result<()> {
        let ctx = self.ctx.clone();
        ctx.readiness.set("http", Ok(()));
        mdp_service::spawn_heartbeat(ctx.clone());
        NoticeListener::new(ctx.clone(), self.marks.clone()).start();
        let result = mdp_service::serve_until_cancelled(self.server, &ctx.cancel).await;
        tracing::info!("query stopped");
        result
    }
}

//! The query binary: load settings, start telemetry, run the service.

use anyhow::Context;
use mdp_query::{Application, SERVICE};

/// The services allocate and free many small values per message (decoded
/// events, rows, JSON); mimalloc serves them faster than the system
/// allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = mdp_config::Settings::load().context("failed to load the configuration")?;
    let _telemetry = mdp_telemetry::init_telemetry(SERVICE, &settings.telemetry);
    let app = Application::build(settings)
        .await
        .context("failed to start query")?;
    tracing::info!(port = app.port(), "query listening");
    actix_web::rt::spawn(mdp_service::shutdown_signal(app.context().cancel.clone()));
    app.run().await.context("query failed")?;
    Ok(())
}

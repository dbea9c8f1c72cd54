//! The result-writer binary: load settings, start telemetry, run the service.

use anyhow::Context;
use mdp_result_writer::{Application, SERVICE};

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
        .context("failed to start result-writer")?;
    tracing::info!(port = app.port(), "result-writer listening");
    actix_web::rt::spawn(mdp_service::shutdown_signal(app.context().cancel.clone()));
    app.run().await.context("result-writer failed")?;
    Ok(())
}

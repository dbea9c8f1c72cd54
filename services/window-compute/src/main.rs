//! The window-compute binary: load settings, start telemetry, run the service.

use anyhow::Context;
use mdp_window_compute::{configuration, Application, SERVICE};

/// Windows allocate and free many small values (decoded states, chunk
/// maps, row images); mimalloc serves them faster than the system
/// allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = configuration::load().context("failed to load the configuration")?;
    let _telemetry = mdp_telemetry::init_telemetry(SERVICE, &settings.telemetry);
    let app = Application::build(settings)
        .await
        .context("failed to start window-compute")?;
    tracing::info!(port = app.port(), "window-compute listening");
    actix_web::rt::spawn(mdp_service::shutdown_signal(app.context().cancel.clone()));
    app.run().await.context("window-compute failed")?;
    Ok(())
}

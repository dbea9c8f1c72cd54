//! The admin binary: load settings, start telemetry, run the application.

use anyhow::Context;
use mdp_admin::{Application, SERVICE};
use mdp_config::Settings;

/// The services allocate and free many small values per message (decoded
/// events, rows, JSON); mimalloc serves them faster than the system
/// allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("failed to load settings")?;
    let _telemetry = mdp_telemetry::init_telemetry(SERVICE, &settings.telemetry);
    let app = Application::build(settings)
        .await
        .context("failed to start admin")?;
    actix_web::rt::spawn(mdp_service::shutdown_signal(app.cancel_token()));
    app.run().await.context("admin server failed")
}

//! The flow-control binary: load settings, start telemetry, run until SIGINT/SIGTERM.

use anyhow::Context;
use mdp_flow_control::{Application, Settings, SERVICE};

/// The services allocate and free many small values per message (decoded
/// events, rows, JSON); mimalloc serves them faster than the system
/// allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("failed to load configuration")?;
    let _telemetry = mdp_telemetry::init_telemetry(SERVICE, &settings.telemetry);
    let app = Application::build(settings)
        .await
        .context("failed to start flow-control")?;
    actix::spawn(mdp_service::shutdown_signal(app.shutdown_token()));
    app.run().await.context("flow-control failed")
}

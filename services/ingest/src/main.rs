//! `mdp-ingest`: loads the settings, starts telemetry and runs ingest.

use anyhow::Context;

/// The services allocate and free many small values per message (decoded
/// events, rows, JSON); mimalloc serves them faster than the system
/// allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = mdp_config::Settings::load().context("failed to load the configuration")?;
    let _telemetry = mdp_telemetry::init_telemetry(mdp_ingest::SERVICE, &settings.telemetry);
    let app = mdp_ingest::Application::build(settings)
        .await
        .context("failed to start ingest")?;
    actix_web::rt::spawn(mdp_service::shutdown_signal(app.cancel_token()));
    app.run().await.context("ingest failed")?;
    Ok(())
}

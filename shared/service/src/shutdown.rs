//! Turns SIGINT / SIGTERM into the instance's cancellation token.

use tokio_util::sync::CancellationToken;

/// Waits for SIGINT or SIGTERM and cancels `cancel`; returns early when
/// `cancel` is cancelled by someone else.
pub async fn shutdown_signal(cancel: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = interrupt => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = cancel.cancelled() => return,
    }
    cancel.cancel();
}

/// Serves `server` until `cancel` fires (then stops it gracefully) or the
/// server ends by itself (then cancels `cancel`, so the instance's actors stop
/// too). Returns the server's own result.
pub async fn serve_until_cancelled(
    server: actix_web::dev::Server,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let mut server = server;
    let handle = server.handle();
    let served = tokio::select! {
        served = &mut server => {
            if let Err(error) = &served {
                tracing::error!(error = %error, "http server failed");
            }
            served
        }
        () = cancel.cancelled() => {
            // The stop command is processed by the server future itself, so
            // both must be polled together.
            let (served, ()) = tokio::join!(server, handle.stop(true));
            served
        }
    };
    cancel.cancel();
    served
}

//! Connecting to RabbitMQ: retries forever with jittered exponential backoff
//! until connected or cancelled, logging and counting every failed attempt.

use crate::error::AmqpError;
use crate::metrics::CONNECT_FAILURES;
use lapin::types::LongString;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// One attempt (TCP + AMQP handshake) may take this long before it is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The delay before retry number `attempt` (0-based): `100 ms · 2^attempt`
/// capped at 5 s, with "equal jitter" (uniform in the upper half) so that
/// many instances restarted together do not reconnect in lockstep.
pub fn backoff_delay(attempt: u32) -> Duration {
    let ceiling = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let half = ceiling / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

/// [`connect`] after waiting `delay` (a link's backoff before it
/// reconnects); `Err(Cancelled)` when `cancel` fires during the wait.
pub async fn connect_after(
    delay: Duration,
    url: &str,
    connection_name: &str,
    cancel: &CancellationToken,
) -> Result<Connection, AmqpError> {
    tokio::select! {
        _ = cancel.cancelled() => return Err(AmqpError::Cancelled),
        _ = tokio::time::sleep(delay) => {}
    }
    connect(url, connection_name, cancel).await
}

/// Connects to `url`, naming the connection `connection_name` (shown by the broker).
///
/// Retries forever with [`backoff_delay`]; each failure is logged with an
/// `error` field and counted in `mdp_amqp_connect_failures_total`. Returns
/// `Err(Cancelled)` when `cancel` fires first and `Err(InvalidUrl)` at once
/// when the URL cannot be parsed (a configuration error no retry can fix).
#[tracing::instrument(skip_all, fields(connection = connection_name))]
pub async fn connect(
    url: &str,
    connection_name: &str,
    cancel: &CancellationToken,
) -> Result<Connection, AmqpError> {
    let uri: AMQPUri = url.parse().map_err(AmqpError::InvalidUrl)?;
    let mut attempt: u32 = 0;
    loop {
        let props =
            ConnectionProperties::default().with_connection_name(LongString::from(connection_name));
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(AmqpError::Cancelled),
            r = tokio::time::timeout(ATTEMPT_TIMEOUT, Connection::connect_uri(uri.clone(), props)) => r,
        };
        let error = match result {
            Ok(Ok(conn)) => {
                tracing::info!(
                    host = %uri.authority.host,
                    port = uri.authority.port,
                    vhost = %uri.vhost,
                    attempts = attempt + 1,
                    "amqp connected"
                );
                return Ok(conn);
            }
            Ok(Err(e)) => mdp_telemetry::error_chain(&e),
            Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        CONNECT_FAILURES.inc();
        let delay = backoff_delay(attempt);
        tracing::warn!(
            error = %error,
            host = %uri.authority.host,
            port = uri.authority.port,
            attempt = attempt + 1,
            retry_in_ms = delay.as_millis() as u64,
            "amqp connect failed"
        );
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = cancel.cancelled() => return Err(AmqpError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Opens a channel on `conn` (e.g. to declare the topology).
pub async fn open_channel(conn: &Connection) -> Result<lapin::Channel, AmqpError> {
    conn.create_channel()
        .await
        .map_err(|e| AmqpError::broker("open", "a channel", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        for _ in 0..200 {
            let d0 = backoff_delay(0);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d3 = backoff_delay(3);
            assert!(
                d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
                "{d3:?}"
            );
            let big = backoff_delay(40);
            assert!(
                big >= Duration::from_millis(2500) && big <= BACKOFF_MAX,
                "{big:?}"
            );
        }
    }

    #[tokio::test]
    async fn invalid_url_fails_at_once() {
        let cancel = CancellationToken::new();
        let err = connect("not a url", "test", &cancel).await.err();
        assert!(matches!(err, Some(AmqpError::InvalidUrl(_))), "{err:?}");
    }

    #[tokio::test]
    async fn cancel_stops_retrying() {
        // Port 1 on localhost refuses connections, so this would retry forever.
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            c.cancel();
        });
        let before = CONNECT_FAILURES.get();
        let started = std::time::Instant::now();
        let err = connect("amqp://guest:guest@127.0.0.1:1/%2f", "test", &cancel)
            .await
            .err();
        assert!(matches!(err, Some(AmqpError::Cancelled)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(CONNECT_FAILURES.get() > before);
    }
}

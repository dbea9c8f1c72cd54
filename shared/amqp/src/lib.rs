//! RabbitMQ plumbing shared by every service: the topology (exchanges, quorum
//! partition queues, dead-letter queues), connecting with backoff, a confirmed
//! JSON publisher, consumer helpers and `traceparent` headers.
//!
//! A consumer loop of a pipeline stage, settling every delivery once:
//!
//! ```no_run
//! # async fn run(url: &str, cancel: tokio_util::sync::CancellationToken) -> Result<(), mdp_amqp::AmqpError> {
//! use futures::StreamExt;
//! use mdp_amqp::{ack, consumer, dead_letter, decode_json, Topology};
//! use tracing::Instrument;
//!
//! let topology = Topology::new("mdp", 8);
//! let conn = mdp_amqp::connect(url, "window-compute", &cancel).await?;
//! topology.declare(&mdp_amqp::open_channel(&conn).await?).await?;
//! let (_channel, mut deliveries) =
//!     consumer(&conn, &topology.windows_queue(0), "window-compute", 32).await?;
//! while let Some(Ok(delivery)) = deliveries.next().await {
//!     // The processing span continues the sender's trace.
//!     let span = tracing::info_span!("compute_window");
//!     mdp_telemetry::set_parent(&span, mdp_amqp::traceparent(&delivery));
//!     async {
//!         match decode_json::<serde_json::Value>(&delivery, 16 << 20) {
//!             // Ack only after the effect is durable.
//!             Ok(_window) => ack(&delivery).await,
//!             Err(error) => dead_letter(&delivery, error.reason()).await,
//!         }
//!     }
//!     .instrument(span)
//!     .await?;
//! }
//! # Ok(()) }
//! ```

mod connect;
mod consume;
mod error;
mod headers;
mod metrics;
mod publish;
mod topology;

pub use connect::{backoff_delay, connect, connect_after, open_channel};
pub use consume::{
    ack, consumer, dead_letter, decode_json, fanout_consumer, parent_context, requeue, DecodeError,
    FANOUT_PREFETCH,
};
pub use error::AmqpError;
pub use headers::{header_str, traceparent};
pub use publish::{OutgoingMessage, Publisher};
pub use topology::{Stage, Topology};

/// Re-exported so services name lapin types through one path.
pub use lapin;

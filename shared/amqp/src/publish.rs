//! A publisher with broker confirms: every publish waits for the broker's ack
//! and fails on nack, so a caller may record progress only after success.

use crate::error::{short, AmqpError};
use crate::metrics::{stage_label, CONFIRM_SECONDS, PUBLISHED, PUBLISH_FAILURES};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;
use std::time::Instant;

/// Content type of every message of the platform.
const CONTENT_TYPE: &str = "application/json";
/// AMQP delivery mode "persistent".
const PERSISTENT: u8 = 2;

/// One message to publish with [`Publisher::publish`].
#[derive(Debug, Clone)]
pub struct OutgoingMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// The JSON-encoded body.
    pub body: Vec<u8>,
    pub message_id: Option<&'a str>,
    /// The `traceparent` header; `None` takes the current span's.
    pub traceparent: Option<String>,
    /// Fail with [`AmqpError::Unroutable`] when no queue is bound for the key.
    pub mandatory: bool,
}

/// A publisher owning one channel in confirm mode.
///
/// Cheap to clone; clones share the channel and may publish from several
/// tasks at once (each publish waits for its own confirm). When the channel or
/// connection is lost every publish fails with an error for which
/// [`AmqpError::is_connection_lost`] is true; build a new publisher on a new
/// connection then.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    mandatory: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("channel", &self.channel.id())
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl Publisher {
    /// Opens a channel on `conn` and puts it in confirm mode.
    pub async fn new(conn: &Connection) -> Result<Self, AmqpError> {
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| AmqpError::broker("open", "publisher channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| AmqpError::broker("enable confirms on", "publisher channel", e))?;
        Ok(Publisher {
            channel,
            mandatory: false,
        })
    }

    /// The same channel, with `publish_json`/`publish_bytes` failing with
    /// [`AmqpError::Unroutable`] when a message matches no queue (for the
    /// pipeline's direct exchanges; leave it off for fanout heartbeats).
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// The underlying channel (e.g. to declare the topology with it).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether the channel is still usable.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Serializes `body` as JSON and publishes it: persistent, content type
    /// `application/json`, `message_id` if given, the current span's
    /// `traceparent` header; returns once the broker confirmed it.
    pub async fn publish_json<T: Serialize>(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &T,
        message_id: Option<&str>,
    ) -> Result<(), AmqpError> {
        let bytes = match serde_json::to_vec(body) {
            Ok(bytes) => bytes,
            Err(error) => {
                PUBLISH_FAILURES
                    .with_label_values(&[stage_label(exchange), "serialize"])
                    .inc();
                return Err(AmqpError::Serialize(error));
            }
        };
        self.publish_bytes(exchange, routing_key, bytes, message_id)
            .await
    }

    /// Publishes an already JSON-encoded body like [`Publisher::publish_json`].
    pub async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        message_id: Option<&str>,
    ) -> Result<(), AmqpError> {
        self.publish(OutgoingMessage {
            exchange,
            routing_key,
            body,
            message_id,
            traceparent: None,
            mandatory: self.mandatory,
        })
        .await
    }

    /// Publishes `msg` and waits for the broker confirm.
    ///
    /// There is no timeout: while the broker blocks publishers (memory or disk
    /// alarm) this waits, which is the back-pressure the pipeline wants. Wrap
    /// it in `tokio::time::timeout` or `select!` on a cancellation token where
    /// waiting is not acceptable.
    pub async fn publish(&self, msg: OutgoingMessage<'_>) -> Result<(), AmqpError> {
        let stage = stage_label(msg.exchange);
        let result = self.publish_inner(&msg).await;
        match &result {
            Ok(()) => PUBLISHED.with_label_values(&[stage]).inc(),
            Err(error) => {
                let reason = match error {
                    AmqpError::Nacked { .. } => "nack",
                    AmqpError::Unroutable { .. } => "unroutable",
                    AmqpError::NotConfirmed => "not_confirmed",
                    AmqpError::NameTooLong { .. } => "invalid",
                    _ => "channel",
                };
                PUBLISH_FAILURES.with_label_values(&[stage, reason]).inc();
                tracing::warn!(
                    error = %mdp_telemetry::error_chain(error),
                    exchange = msg.exchange,
                    routing_key = msg.routing_key,
                    message_id = msg.message_id.unwrap_or(""),
                    "amqp publish failed"
                );
            }
        }
        result
    }

    async fn publish_inner(&self, msg: &OutgoingMessage<'_>) -> Result<(), AmqpError> {
        let exchange = short("exchange name", msg.exchange)?;
        let routing_key = short("routing key", msg.routing_key)?;
        let properties = properties(msg)?;
        let options = BasicPublishOptions {
            mandatory: msg.mandatory,
            ..BasicPublishOptions::default()
        };
        let started = Instant::now();
        let confirm = self
            .channel
            .basic_publish(exchange, routing_key, options, &msg.body, properties)
            .await
            .map_err(|e| AmqpError::broker("publish to", msg.exchange, e))?
            .await
            .map_err(|e| AmqpError::broker("get the confirm of a publish to", msg.exchange, e))?;
        CONFIRM_SECONDS
            .with_label_values(&[stage_label(msg.exchange)])
            .observe(started.elapsed().as_secs_f64());
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(AmqpError::Unroutable {
                exchange: msg.exchange.to_string(),
                routing_key: msg.routing_key.to_string(),
            }),
            Confirmation::Nack(_) => Err(AmqpError::Nacked {
                exchange: msg.exchange.to_string(),
                routing_key: msg.routing_key.to_string(),
            }),
            Confirmation::NotRequested => Err(AmqpError::NotConfirmed),
        }
    }
}

/// Persistent JSON properties with `message_id`, timestamp and `traceparent`.
fn properties(msg: &OutgoingMessage<'_>) -> Result<BasicProperties, AmqpError> {
    let mut props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(unix_seconds());
    if let Some(id) = msg.message_id {
        props = props.with_message_id(short("message id", id)?);
    }
    let traceparent = msg
        .traceparent
        .clone()
        .or_else(mdp_telemetry::current_traceparent);
    if let Some(tp) = traceparent {
        let mut headers = FieldTable::default();
        headers.insert(
            mdp_telemetry::TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(tp)),
        );
        props = props.with_headers(headers);
    }
    Ok(props)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::table_str;

    fn msg<'a>(message_id: Option<&'a str>, traceparent: Option<&str>) -> OutgoingMessage<'a> {
        OutgoingMessage {
            exchange: "mdp.changes",
            routing_key: "0",
            body: b"{}".to_vec(),
            message_id,
            traceparent: traceparent.map(str::to_string),
            mandatory: false,
        }
    }

    #[test]
    fn properties_are_persistent_json_with_id_and_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = properties(&msg(Some("3:17"), Some(tp))).expect("valid");
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("3:17"));
        let headers = p.headers().as_ref().expect("headers");
        assert_eq!(table_str(headers, "traceparent"), Some(tp));
        assert!(p.timestamp().is_some());
    }

    #[test]
    fn no_span_means_no_traceparent_header() {
        let p = properties(&msg(None, None)).expect("valid");
        assert_eq!(p.headers(), &None);
        assert_eq!(p.message_id(), &None);
    }

    #[test]
    fn overlong_message_id_is_an_error_not_a_panic() {
        let long = "x".repeat(300);
        let err = properties(&msg(Some(&long), None)).err();
        assert!(
            matches!(
                err,
                Some(AmqpError::NameTooLong {
                    what: "message id",
                    len: 300
                })
            ),
            "{err:?}"
        );
    }
}

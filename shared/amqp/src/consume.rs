//! Consuming: consumers with explicit prefetch and manual acknowledgement,
//! size-limited JSON decoding, the sender's trace context, and settling
//! deliveries (ack, dead-letter, requeue) exactly once.

use crate::error::{short, AmqpError};
use crate::headers::traceparent;
use crate::metrics::{stage_label, DEAD_LETTERED, DECODE_FAILURES, REQUEUED};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use serde::de::DeserializeOwned;

/// Prefetch of [`fanout_consumer`] channels (heartbeats, control commands).
pub const FANOUT_PREFETCH: u16 = 64;

/// Why a delivery's body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body exceeds the configured limit (`rabbitmq.max_message_bytes`).
    #[error("message body is {size} bytes, larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The body is not valid JSON of the expected type.
    #[error("message body is not valid JSON of the expected type: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// A short fixed label (`too_large`, `malformed`) for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// Opens a channel with `basic.qos(prefetch)` and starts consuming `queue`
/// with manual acknowledgement. Keep the channel: dropping every handle of it
/// does not stop the consumer, closing it does.
#[tracing::instrument(skip_all, fields(queue = queue, tag = tag, prefetch = prefetch))]
pub async fn consumer(
    conn: &Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> Result<(Channel, Consumer), AmqpError> {
    let queue_name = short("queue name", queue)?;
    let tag_name = short("consumer tag", tag)?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| AmqpError::broker("open a consumer channel for", queue, e))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| AmqpError::broker("set prefetch for", queue, e))?;
    let consumer = channel
        .basic_consume(
            queue_name,
            tag_name,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| AmqpError::broker("consume", queue, e))?;
    tracing::info!("amqp consumer started");
    Ok((channel, consumer))
}

/// Consumes a fanout `exchange` through an exclusive, auto-deleted,
/// server-named queue bound to it (every instance gets every message; the
/// queue disappears with the channel). Manual acknowledgement, prefetch
/// [`FANOUT_PREFETCH`]: ack each delivery.
#[tracing::instrument(skip_all, fields(exchange = exchange, tag = tag))]
pub async fn fanout_consumer(
    conn: &Connection,
    exchange: &str,
    tag: &str,
) -> Result<(Channel, Consumer), AmqpError> {
    let exchange_name = short("exchange name", exchange)?;
    let tag_name = short("consumer tag", tag)?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| AmqpError::broker("open a consumer channel for", exchange, e))?;
    channel
        .basic_qos(FANOUT_PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| AmqpError::broker("set prefetch for", exchange, e))?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| AmqpError::broker("declare a private queue for", exchange, e))?;
    let queue_name = queue.name().clone();
    channel
        .queue_bind(
            queue_name.clone(),
            exchange_name,
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| AmqpError::broker("bind a private queue to", exchange, e))?;
    let consumer = channel
        .basic_consume(
            queue_name.clone(),
            tag_name,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| AmqpError::broker("consume", queue_name.as_str(), e))?;
    tracing::info!(queue = queue_name.as_str(), "amqp fanout consumer started");
    Ok((channel, consumer))
}

/// Decodes the JSON body of `delivery`, refusing bodies above `max_bytes`
/// before parsing. Failures are counted in `mdp_amqp_decode_failures_total`.
pub fn decode_json<T: DeserializeOwned>(
    delivery: &Delivery,
    max_bytes: usize,
) -> Result<T, DecodeError> {
    let result = decode_bytes(&delivery.data, max_bytes);
    if let Err(error) = &result {
        DECODE_FAILURES.with_label_values(&[error.reason()]).inc();
    }
    result
}

fn decode_bytes<T: DeserializeOwned>(data: &[u8], max_bytes: usize) -> Result<T, DecodeError> {
    if data.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: data.len(),
            max: max_bytes,
        });
    }
    serde_json::from_slice(data).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// The sender's trace context from the `traceparent` header (empty when absent
/// or invalid). Make the processing span its child with
/// `span.set_parent(parent_context(&delivery))` before entering the span, or
/// use `mdp_telemetry::set_parent(&span, mdp_amqp::traceparent(&delivery))`.
pub fn parent_context(delivery: &Delivery) -> opentelemetry::Context {
    match traceparent(delivery) {
        Some(tp) => mdp_telemetry::context_from_traceparent(tp),
        None => opentelemetry::Context::new(),
    }
}

fn settled(delivery: &Delivery, ok: bool) -> Result<(), AmqpError> {
    if ok {
        Ok(())
    } else {
        Err(AmqpError::AlreadySettled {
            delivery_tag: delivery.delivery_tag,
        })
    }
}

/// Acknowledges `delivery` (its effect is durable).
pub async fn ack(delivery: &Delivery) -> Result<(), AmqpError> {
    let ok = delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .map_err(|e| AmqpError::broker("ack", delivery_target(delivery), e))?;
    settled(delivery, ok)
}

/// Rejects `delivery` without requeue: quorum partition queues route it to
/// the dead-letter queue of their stage. Logs `reason` and counts it in
/// `mdp_amqp_dead_lettered_total{stage}`.
pub async fn dead_letter(delivery: &Delivery, reason: &str) -> Result<(), AmqpError> {
    let stage = stage_label(delivery.exchange.as_str());
    let ok = delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        })
        .await
        .map_err(|e| AmqpError::broker("dead-letter", delivery_target(delivery), e))?;
    settled(delivery, ok)?;
    DEAD_LETTERED.with_label_values(&[stage]).inc();
    tracing::warn!(
        reason,
        stage,
        exchange = delivery.exchange.as_str(),
        routing_key = delivery.routing_key.as_str(),
        message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str())
            .unwrap_or(""),
        redelivered = delivery.redelivered,
        "message dead-lettered"
    );
    Ok(())
}

/// Returns `delivery` to its queue for another attempt (a transient failure).
pub async fn requeue(delivery: &Delivery) -> Result<(), AmqpError> {
    let ok = delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .map_err(|e| AmqpError::broker("requeue", delivery_target(delivery), e))?;
    settled(delivery, ok)?;
    REQUEUED
        .with_label_values(&[stage_label(delivery.exchange.as_str())])
        .inc();
    Ok(())
}

fn delivery_target(delivery: &Delivery) -> String {
    format!(
        "delivery {} from {}",
        delivery.delivery_tag,
        delivery.exchange.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, LongString};
    use lapin::BasicProperties;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Msg {
        partition: u32,
    }

    fn delivery(body: &[u8]) -> Delivery {
        Delivery::mock(7, "mdp.windows".into(), "2".into(), false, body.to_vec())
    }

    #[test]
    fn decodes_within_the_limit() {
        let d = delivery(br#"{"partition":2}"#);
        assert_eq!(decode_json::<Msg>(&d, 15), Ok(Msg { partition: 2 }));
    }

    #[test]
    fn refuses_bodies_over_the_limit() {
        let d = delivery(br#"{"partition":2}"#);
        assert_eq!(
            decode_json::<Msg>(&d, 14),
            Err(DecodeError::TooLarge { size: 15, max: 14 })
        );
        let text = DecodeError::TooLarge { size: 15, max: 14 }.to_string();
        assert_eq!(
            text,
            "message body is 15 bytes, larger than the limit of 14 bytes"
        );
    }

    #[test]
    fn malformed_bodies_say_why() {
        let err =
            decode_json::<Msg>(&delivery(b"{\"partition\":\"x\"}"), 1000).expect_err("wrong type");
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().contains("invalid type: string"), "{err}");
        let err = decode_json::<Msg>(&delivery(b"not json"), 1000).expect_err("not json");
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn decode_failures_are_counted() {
        let before = DECODE_FAILURES.with_label_values(&["too_large"]).get();
        let _ = decode_json::<Msg>(&delivery(b"{}"), 1);
        assert_eq!(
            DECODE_FAILURES.with_label_values(&["too_large"]).get(),
            before + 1
        );
    }

    #[test]
    fn parent_context_reads_the_traceparent_header() {
        use opentelemetry::trace::TraceContextExt;
        let mut d = delivery(b"{}");
        assert!(!parent_context(&d).span().span_context().is_valid());
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
        );
        d.properties = BasicProperties::default().with_headers(headers);
        let cx = parent_context(&d);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[tokio::test]
    async fn mock_deliveries_settle_once() {
        // A mock delivery has no channel: the first settle succeeds locally,
        // the second is refused instead of reaching the broker twice.
        let d = delivery(b"{}");
        assert!(ack(&d).await.is_ok());
        assert!(matches!(
            ack(&d).await,
            Err(AmqpError::AlreadySettled { delivery_tag: 7 })
        ));
        assert!(matches!(
            requeue(&d).await,
            Err(AmqpError::AlreadySettled { .. })
        ));
    }
}

//! Parking a window taken from the held store: it has no delivery the
//! broker could dead-letter, so a copy is published to the windows
//! dead-letter queue, with headers naming the partition queue admin replays
//! it to (`mdp_types::status::dead_letter`).

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};
use mdp_amqp::{Publisher, Stage, Topology};
use mdp_types::status::dead_letter;
use mdp_types::WindowId;

/// Why a parked copy was not published.
#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    #[error("failed to publish the parked copy of window {window_id} to {exchange}")]
    Publish {
        window_id: WindowId,
        exchange: String,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker did not take the parked copy of window {window_id}: {what}")]
    NotTaken { window_id: WindowId, what: String },
    #[error("'{0}' is not a valid AMQP short string")]
    Name(String),
}

fn short(value: &str) -> Result<ShortString, ParkError> {
    ShortString::try_new(value).map_err(|_| ParkError::Name(value.to_string()))
}

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The properties of the parked copy of window `window_id` of `partition`.
pub fn properties(
    topology: &Topology,
    partition: u32,
    window_id: WindowId,
    reason: &str,
) -> Result<BasicProperties, ParkError> {
    let mut headers = FieldTable::default();
    headers.insert(
        dead_letter::ORIGIN_QUEUE_HEADER.into(),
        long(&topology.windows_queue(partition)),
    );
    headers.insert(
        dead_letter::ORIGIN_EXCHANGE_HEADER.into(),
        long(&topology.windows_exchange()),
    );
    headers.insert(
        dead_letter::ORIGIN_ROUTING_KEY_HEADER.into(),
        long(&Topology::routing_key(partition)),
    );
    headers.insert(dead_letter::REASON_HEADER.into(), long(reason));
    if let Some(tp) = mdp_telemetry::current_traceparent() {
        headers.insert(mdp_telemetry::TRACEPARENT.into(), long(&tp));
    }
    Ok(BasicProperties::default()
        .with_content_type(short("application/json")?)
        .with_delivery_mode(2)
        .with_message_id(short(&format!("{partition}:{window_id}"))?)
        .with_timestamp(u64::try_from(mdp_types::now_ms() / 1000).unwrap_or(0))
        .with_headers(headers))
}

/// Publishes `json`, the window `window_id` of `partition`, to the windows
/// dead-letter queue and waits for the broker's confirm.
pub async fn publish_parked_copy(
    publisher: &Publisher,
    topology: &Topology,
    partition: u32,
    window_id: WindowId,
    json: &[u8],
    reason: &str,
) -> Result<(), ParkError> {
    let exchange = topology.dead_letter_exchange();
    let props = properties(topology, partition, window_id, reason)?;
    let failed = |source| ParkError::Publish {
        window_id,
        exchange: exchange.clone(),
        source,
    };
    let confirmation = publisher
        .channel()
        .basic_publish(
            short(&exchange)?,
            short(Stage::Windows.as_str())?,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            json,
            props,
        )
        .await
        .map_err(failed)?
        .await
        .map_err(failed)?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(ParkError::NotTaken {
            window_id,
            what: "no queue is bound for it (unroutable)".into(),
        }),
        Confirmation::Nack(_) => Err(ParkError::NotTaken {
            window_id,
            what: "refused (nack)".into(),
        }),
        Confirmation::NotRequested => Err(ParkError::NotTaken {
            window_id,
            what: "the channel is not in confirm mode".into(),
        }),
    }
}

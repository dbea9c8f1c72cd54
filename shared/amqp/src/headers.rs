//! Reading text headers of deliveries, and the `traceparent` header in particular.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};

/// A text header of `delivery` (long or short string), `None` when absent,
/// not text or not UTF-8.
pub fn header_str<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a str> {
    table_str(delivery.properties.headers().as_ref()?, name)
}

pub(crate) fn table_str<'a>(table: &'a FieldTable, name: &str) -> Option<&'a str> {
    match table.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// The W3C `traceparent` header of `delivery`.
pub fn traceparent(delivery: &Delivery) -> Option<&str> {
    header_str(delivery, mdp_telemetry::TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    fn delivery_with(headers: FieldTable) -> Delivery {
        let mut d = Delivery::mock(1, "mdp.changes".into(), "0".into(), false, b"{}".to_vec());
        d.properties = BasicProperties::default().with_headers(headers);
        d
    }

    #[test]
    fn reads_long_and_short_string_headers() {
        let mut t = FieldTable::default();
        t.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-aa-bb-01".into()),
        );
        t.insert("short".into(), AMQPValue::ShortString("x".into()));
        t.insert("number".into(), AMQPValue::LongInt(3));
        let d = delivery_with(t);
        assert_eq!(traceparent(&d), Some("00-aa-bb-01"));
        assert_eq!(header_str(&d, "short"), Some("x"));
        assert_eq!(header_str(&d, "number"), None);
        assert_eq!(header_str(&d, "missing"), None);
    }

    #[test]
    fn no_headers_at_all() {
        let d = Delivery::mock(1, "".into(), "".into(), false, vec![]);
        assert_eq!(traceparent(&d), None);
    }
}

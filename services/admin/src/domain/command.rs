//! Operator degrade commands: the request of `POST /v1/degrade/{service}/{machine}`
//! validated into a [`ControlCommand`], with errors naming the bad field.

use mdp_types::{ControlCommand, Override};
use std::collections::{BTreeMap, BTreeSet};

/// Longest accepted `reason`, characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest service or machine name, characters.
const MAX_NAME_CHARS: usize = 64;

/// A rejected request; `Display` starts with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("service: {0}")]
    Service(String),
    #[error("machine: {0}")]
    Machine(String),
    #[error("action: {0}")]
    Action(String),
    #[error("reason: {0}")]
    Reason(String),
    #[error("body: {0}")]
    Body(String),
}

/// What admin knows when validating: the services it accepts commands for and,
/// for services with live instances, the machines they report.
#[derive(Debug, Clone, Default)]
pub struct KnownMachines {
    pub services: BTreeSet<String>,
    /// Service → machines reported by its live instances. A service absent
    /// here (no live instance) accepts any well-formed machine name.
    pub machines: BTreeMap<String, BTreeSet<String>>,
}

fn check_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(format!("longer than {MAX_NAME_CHARS} characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "'{value}' may only contain lowercase letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// Parses and validates a degrade request into the command to publish.
pub fn parse_command(
    service: &str,
    machine: &str,
    body: &[u8],
    known: &KnownMachines,
    now_ms: i64,
) -> Result<ControlCommand, CommandError> {
    check_name(service).map_err(CommandError::Service)?;
    if !known.services.contains(service) {
        let list: Vec<&str> = known.services.iter().map(String::as_str).collect();
        return Err(CommandError::Service(format!(
            "unknown service '{service}' (known: {})",
            list.join(", ")
        )));
    }
    check_name(machine).map_err(CommandError::Machine)?;
    if let Some(machines) = known.machines.get(service) {
        if !machines.is_empty() && !machines.contains(machine) {
            let list: Vec<&str> = machines.iter().map(String::as_str).collect();
            return Err(CommandError::Machine(format!(
                "{service} has no machine '{machine}' (known: {})",
                list.join(", ")
            )));
        }
    }

    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| CommandError::Body(format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(CommandError::Body("expected a JSON object".into()));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| k.as_str() != "action" && k.as_str() != "reason")
    {
        return Err(CommandError::Body(format!(
            "unknown field '{unknown}' (expected action, reason)"
        )));
    }
    const ACTIONS: &str = "force_degraded, force_normal or auto";
    let action = match fields.get("action") {
        None | Some(serde_json::Value::Null) => {
            return Err(CommandError::Action(format!(
                "missing (expected {ACTIONS})"
            )))
        }
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "force_degraded" => Override::ForceDegraded,
            "force_normal" => Override::ForceNormal,
            "auto" => Override::Auto,
            other => {
                return Err(CommandError::Action(format!(
                    "unknown action '{other}' (expected {ACTIONS})"
                )))
            }
        },
        Some(_) => {
            return Err(CommandError::Action(format!(
                "expected a string: {ACTIONS}"
            )))
        }
    };
    let reason = match fields.get("reason") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => {
            if s.chars().count() > MAX_REASON_CHARS {
                return Err(CommandError::Reason(format!(
                    "longer than {MAX_REASON_CHARS} characters"
                )));
            }
            let trimmed = s.trim();
            (!trimmed.is_empty()).then(|| trimmed.to_string())
        }
        Some(_) => return Err(CommandError::Reason("expected a string".into())),
    };
    Ok(ControlCommand {
        service: service.to_string(),
        machine: machine.to_string(),
        action,
        issued_at_ms: now_ms,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> KnownMachines {
        KnownMachines {
            services: ["ingest", "query"].iter().map(|s| s.to_string()).collect(),
            machines: [(
                "query".to_string(),
                ["mysql", "redis"].iter().map(|s| s.to_string()).collect(),
            )]
            .into_iter()
            .collect(),
        }
    }

    fn parse(service: &str, machine: &str, body: &str) -> Result<ControlCommand, CommandError> {
        parse_command(service, machine, body.as_bytes(), &known(), 42)
    }

    #[test]
    fn a_valid_request_becomes_a_command() {
        let cmd = parse(
            "query",
            "redis",
            r#"{"action":"force_degraded","reason":"  redis failover  "}"#,
        );
        assert_eq!(
            cmd,
            Ok(ControlCommand {
                service: "query".into(),
                machine: "redis".into(),
                action: Override::ForceDegraded,
                issued_at_ms: 42,
                reason: Some("redis failover".into()),
            })
        );
        let auto = parse("query", "mysql", r#"{"action":"auto"}"#).map(|c| (c.action, c.reason));
        assert_eq!(auto, Ok((Override::Auto, None)));
        let normal = parse(
            "query",
            "mysql",
            r#"{"action":"force_normal","reason":null}"#,
        );
        assert_eq!(normal.map(|c| c.action), Ok(Override::ForceNormal));
    }

    #[test]
    fn machines_of_services_without_live_instances_are_accepted() {
        let cmd = parse("ingest", "rabbitmq", r#"{"action":"force_degraded"}"#);
        assert_eq!(cmd.map(|c| c.machine), Ok("rabbitmq".to_string()));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "nope",
                "redis",
                r#"{"action":"auto"}"#,
                "service: unknown service 'nope' (known: ingest, query)",
            ),
            (
                "Query",
                "redis",
                r#"{"action":"auto"}"#,
                "service: 'Query' may only contain lowercase letters, digits, '-' and '_'",
            ),
            (
                "query",
                "kafka",
                r#"{"action":"auto"}"#,
                "machine: query has no machine 'kafka' (known: mysql, redis)",
            ),
            (
                "query",
                "re dis",
                r#"{"action":"auto"}"#,
                "machine: 're dis' may only contain lowercase letters, digits, '-' and '_'",
            ),
            (
                "query",
                "redis",
                r#"{}"#,
                "action: missing (expected force_degraded, force_normal or auto)",
            ),
            (
                "query",
                "redis",
                r#"{"action":"off"}"#,
                "action: unknown action 'off' (expected force_degraded, force_normal or auto)",
            ),
            (
                "query",
                "redis",
                r#"{"action":1}"#,
                "action: expected a string: force_degraded, force_normal or auto",
            ),
            (
                "query",
                "redis",
                r#"{"action":"auto","reason":5}"#,
                "reason: expected a string",
            ),
            (
                "query",
                "redis",
                r#"{"action":"auto","force":true}"#,
                "body: unknown field 'force' (expected action, reason)",
            ),
            (
                "query",
                "redis",
                r#"["auto"]"#,
                "body: expected a JSON object",
            ),
        ];
        for (service, machine, body, expected) in cases {
            let err = parse(service, machine, body).map_err(|e| e.to_string());
            assert_eq!(err, Err(expected.to_string()), "{service}/{machine} {body}");
        }
        let long = format!(r#"{{"action":"auto","reason":"{}"}}"#, "x".repeat(501));
        assert_eq!(
            parse("query", "redis", &long).map_err(|e| e.to_string()),
            Err("reason: longer than 500 characters".to_string())
        );
        let bad_json = parse("query", "redis", "{").map_err(|e| e.to_string());
        assert!(
            matches!(&bad_json, Err(m) if m.starts_with("body: not valid JSON")),
            "{bad_json:?}"
        );
    }
}

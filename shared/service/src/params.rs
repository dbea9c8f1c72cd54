//! Query parameters of endpoints that take a single named parameter.

use std::fmt;

/// Why a query string holds something other than the one parameter an
/// endpoint takes. Displays as `<parameter>: <what is wrong>`, the form of
/// every 400 the services answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// A parameter the endpoint does not take.
    Unknown {
        name: String,
        expected: &'static str,
    },
    /// The parameter given more than once.
    Repeated(&'static str),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Unknown { name, expected } => {
                write!(f, "{name}: unknown parameter (expected {expected})")
            }
            ParamError::Repeated(name) => write!(f, "{name}: given more than once"),
        }
    }
}

impl std::error::Error for ParamError {}

/// The value of `name`, the only parameter an endpoint takes (`None` when
/// absent); an error when another parameter is given or `name` repeats.
pub fn single_param<'a>(
    params: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, ParamError> {
    if let Some((other, _)) = params.iter().find(|(k, _)| k != name) {
        return Err(ParamError::Unknown {
            name: other.clone(),
            expected: name,
        });
    }
    match params {
        [] => Ok(None),
        [(_, value)] => Ok(Some(value)),
        _ => Err(ParamError::Repeated(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn one_parameter_once_or_not_at_all() {
        assert_eq!(single_param(&params(&[]), "limit"), Ok(None));
        assert_eq!(
            single_param(&params(&[("limit", " 5")]), "limit"),
            Ok(Some(" 5"))
        );
        let err = |p: &[(&str, &str)]| {
            single_param(&params(p), "limit")
                .map(|v| v.map(str::to_string))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            err(&[("limit", "1"), ("limit", "2")]),
            Err("limit: given more than once".into())
        );
        assert_eq!(
            err(&[("limit", "1"), ("limt", "2")]),
            Err("limt: unknown parameter (expected limit)".into())
        );
    }
}

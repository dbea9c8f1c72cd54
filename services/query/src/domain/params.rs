//! The parameters of `GET /v1/reports/{name}/rows`, parsed at the edge into
//! validated newtypes; past this module nothing re-validates.

use super::rows::SortKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::NaiveDate;
use mdp_report::Report;
use mdp_result_writer::layout::MAX_TENANT_LEN;
use std::fmt;

/// A parameter that failed validation; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    pub param: &'static str,
    pub message: String,
}

impl ParamError {
    fn new(param: &'static str, message: impl Into<String>) -> Self {
        ParamError {
            param,
            message: message.into(),
        }
    }
}

/// A merchant id in the canonical tenant form: integers in decimal without
/// leading zeros (as the platform routes them), other ids as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MerchantId(String);

impl MerchantId {
    pub fn parse(raw: &str) -> Result<Self, ParamError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ParamError::new("merchant_id", "must not be empty"));
        }
        if s.chars().count() > MAX_TENANT_LEN {
            return Err(ParamError::new(
                "merchant_id",
                format!("must be at most {MAX_TENANT_LEN} characters"),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(ParamError::new(
                "merchant_id",
                "must not contain control characters",
            ));
        }
        let canonical = if let Ok(i) = s.parse::<i64>() {
            i.to_string()
        } else if let Ok(u) = s.parse::<u64>() {
            u.to_string()
        } else {
            s.to_string()
        };
        Ok(MerchantId(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a `YYYY-MM-DD` date named `param`.
pub fn parse_day(param: &'static str, raw: &str) -> Result<NaiveDate, ParamError> {
    let s = raw.trim();
    let shaped = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(ParamError::new(
            param,
            format!("{s:?} is not a date in YYYY-MM-DD form"),
        ));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| ParamError::new(param, format!("{s} is not a valid calendar date")))
}

/// An inclusive range of days; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DayRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DayRange {
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self, ParamError> {
        let from = from.map(|f| parse_day("from", f)).transpose()?;
        let to = to.map(|t| parse_day("to", t)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(ParamError::new("from", format!("{f} is after to ({t})")));
            }
        }
        Ok(DayRange { from, to })
    }

    pub fn is_unbounded(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether a row with date key `day` (`YYYY-MM-DD`) is inside. Rows
    /// without a date key are only inside an unbounded range.
    pub fn contains(&self, day: Option<&str>) -> bool {
        if self.is_unbounded() {
            return true;
        }
        let Some(day) = day.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else {
            return false;
        };
        self.from.is_none_or(|f| day >= f) && self.to.is_none_or(|t| day <= t)
    }
}

/// Rows per page, `1..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(usize);

impl Limit {
    pub fn parse(raw: Option<&str>, max: usize) -> Result<Self, ParamError> {
        let max = max.max(1);
        let Some(raw) = raw else {
            return Ok(Limit(max));
        };
        match raw.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Limit(n)),
            _ => Err(ParamError::new(
                "limit",
                format!("must be an integer from 1 to {max}"),
            )),
        }
    }

    pub fn get(&self) -> usize {
        self.0
    }
}

/// The opaque paging token: base64url (no padding) of the JSON of the last
/// row's [`SortKey`].
#[derive(Debug, Clone, PartialEq)]
pub struct PageToken(pub SortKey);

impl PageToken {
    pub fn parse(raw: &str) -> Result<Self, ParamError> {
        let invalid = || ParamError::new("page_token", "is not a token returned by this API");
        if raw.len() > 8192 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| invalid())?;
        serde_json::from_slice(&bytes)
            .map(PageToken)
            .map_err(|_| invalid())
    }

    pub fn encode(key: &SortKey) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
    }
}

/// The raw query string values (each parameter at most once).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawRowsParams {
    pub merchant_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub page_token: Option<String>,
    pub limit: Option<String>,
}

impl RawRowsParams {
    /// Collects the known parameters of a decoded query string; a known
    /// parameter given twice is an error, unknown ones are ignored.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ParamError> {
        let mut out = RawRowsParams::default();
        for (k, v) in pairs {
            let (name, slot) = match k.as_str() {
                "merchant_id" => ("merchant_id", &mut out.merchant_id),
                "from" => ("from", &mut out.from),
                "to" => ("to", &mut out.to),
                "page_token" => ("page_token", &mut out.page_token),
                "limit" => ("limit", &mut out.limit),
                _ => continue,
            };
            if slot.is_some() {
                return Err(ParamError::new(name, "given more than once"));
            }
            *slot = Some(v);
        }
        Ok(out)
    }
}

/// What parameter validation needs to know about a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportShape<'a> {
    pub name: &'a str,
    pub keyed_by_merchant: bool,
    pub has_date_column: bool,
}

impl<'a> From<&'a Report> for ReportShape<'a> {
    fn from(r: &'a Report) -> Self {
        ReportShape {
            name: &r.name,
            keyed_by_merchant: r.tenant_column.is_some(),
            has_date_column: r.date_column.is_some(),
        }
    }
}

/// A validated rows request for one report.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsParams {
    /// The merchant for reports keyed by merchant, `None` otherwise.
    pub merchant: Option<MerchantId>,
    /// A report keyed by merchant read without `merchant_id`: every merchant's rows.
    pub all_merchants: bool,
    pub range: DayRange,
    pub limit: Limit,
    pub after: Option<SortKey>,
}

impl RowsParams {
    pub fn parse(
        raw: &RawRowsParams,
        report: ReportShape<'_>,
        max_limit: usize,
    ) -> Result<Self, ParamError> {
        let merchant = match (report.keyed_by_merchant, raw.merchant_id.as_deref()) {
            (true, Some(m)) => Some(MerchantId::parse(m)?),
            (true, None) => None,
            (false, Some(_)) => {
                return Err(ParamError::new(
                    "merchant_id",
                    format!("report {} is not keyed by merchant", report.name),
                ))
            }
            (false, None) => None,
        };
        let range = DayRange::parse(raw.from.as_deref(), raw.to.as_deref())?;
        if !report.has_date_column {
            if let Some(param) = raw
                .from
                .as_ref()
                .map(|_| "from")
                .or(raw.to.as_ref().map(|_| "to"))
            {
                return Err(ParamError::new(
                    param,
                    format!("report {} has no date column", report.name),
                ));
            }
        }
        let limit = Limit::parse(raw.limit.as_deref(), max_limit)?;
        let after = raw
            .page_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(PageToken::parse)
            .transpose()?
            .map(|t| t.0);
        Ok(RowsParams {
            all_merchants: report.keyed_by_merchant && merchant.is_none(),
            merchant,
            range,
            limit,
            after,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mdp_report::TenantColumns;

    fn shape(keyed_by_merchant: bool, has_date_column: bool) -> ReportShape<'static> {
        ReportShape {
            name: "daily",
            keyed_by_merchant,
            has_date_column,
        }
    }

    #[test]
    fn shapes_come_from_report_definitions() {
        let r = Report::parse(
            "daily",
            "daily.sql",
            "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders \
             FROM orders GROUP BY merchant_id, DATE(created_at)",
            &TenantColumns::default(),
        )
        .unwrap();
        assert_eq!(ReportShape::from(&r), shape(true, true));
    }

    fn raw(pairs: &[(&str, &str)]) -> RawRowsParams {
        RawRowsParams::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn merchant_ids_are_canonical() {
        assert_eq!(MerchantId::parse("007").unwrap().as_str(), "7");
        assert_eq!(MerchantId::parse(" 42 ").unwrap().as_str(), "42");
        assert_eq!(MerchantId::parse("m-9").unwrap().as_str(), "m-9");
        assert_eq!(MerchantId::parse("").unwrap_err().param, "merchant_id");
        assert!(MerchantId::parse(&"x".repeat(65)).is_err());
        assert!(MerchantId::parse("a\nb").is_err());
    }

    #[test]
    fn days_must_be_iso_dates() {
        assert_eq!(
            parse_day("from", "2026-11-21").unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
        );
        for bad in [
            "2026-1-21",
            "21-11-2026",
            "2026-02-30",
            "yesterday",
            "2026-11-21T00",
        ] {
            let e = parse_day("from", bad).unwrap_err();
            assert_eq!(e.param, "from", "{bad}");
        }
        let e = DayRange::parse(Some("2026-11-22"), Some("2026-11-21")).unwrap_err();
        assert_eq!(e.to_string(), "from: 2026-11-22 is after to (2026-11-21)");
        let e = DayRange::parse(None, Some("2026-13-01")).unwrap_err();
        assert_eq!(e.param, "to");
    }

    #[test]
    fn ranges_filter_inclusively() {
        let r = DayRange::parse(Some("2026-11-01"), Some("2026-11-03")).unwrap();
        assert!(r.contains(Some("2026-11-01")) && r.contains(Some("2026-11-03")));
        assert!(!r.contains(Some("2026-10-31")) && !r.contains(Some("2026-11-04")));
        assert!(!r.contains(None));
        assert!(DayRange::default().contains(None));
        let open = DayRange::parse(Some("2026-11-02"), None).unwrap();
        assert!(open.contains(Some("2030-01-01")) && !open.contains(Some("2026-11-01")));
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(Limit::parse(None, 100).unwrap().get(), 100);
        assert_eq!(Limit::parse(Some("5"), 100).unwrap().get(), 5);
        for bad in ["0", "101", "-1", "ten", ""] {
            let e = Limit::parse(Some(bad), 100).unwrap_err();
            assert_eq!(
                e.to_string(),
                "limit: must be an integer from 1 to 100",
                "{bad}"
            );
        }
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let key = SortKey {
            day: Some("2026-11-21".into()),
            keys: vec![serde_json::json!(7)],
            key_text: "7\u{1f}2026-11-21".into(),
        };
        let token = PageToken::encode(&key);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(PageToken::parse(&token).unwrap().0, key);
        for bad in ["%%%", "bm90IGpzb24", "e30"] {
            assert_eq!(
                PageToken::parse(bad).unwrap_err().param,
                "page_token",
                "{bad}"
            );
        }
    }

    #[test]
    fn merchant_reports_read_one_merchant_or_all() {
        let r = shape(true, true);
        let all = RowsParams::parse(&raw(&[]), r.clone(), 100).unwrap();
        assert_eq!(all.merchant, None);
        assert!(all.all_merchants);
        let p = RowsParams::parse(
            &raw(&[
                ("merchant_id", "0042"),
                ("from", "2026-11-01"),
                ("limit", "3"),
            ]),
            r,
            100,
        )
        .unwrap();
        assert!(!p.all_merchants);
        assert_eq!(p.merchant.unwrap().as_str(), "42");
        assert_eq!(p.limit.get(), 3);
        assert_eq!(p.range.from, NaiveDate::from_ymd_opt(2026, 11, 1));
    }

    #[test]
    fn other_reports_refuse_merchant_id_and_dates_without_date_column() {
        let r = shape(false, false);
        let e = RowsParams::parse(&raw(&[("merchant_id", "1")]), r.clone(), 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "merchant_id: report daily is not keyed by merchant"
        );
        let e = RowsParams::parse(&raw(&[("to", "2026-11-01")]), r.clone(), 100).unwrap_err();
        assert_eq!(e.to_string(), "to: report daily has no date column");
        let p = RowsParams::parse(&raw(&[("limit", "2")]), r, 100).unwrap();
        assert_eq!(p.merchant, None);
        let e = RowsParams::parse(
            &raw(&[("merchant_id", "1"), ("from", "2026-11-01")]),
            shape(true, false),
            100,
        )
        .unwrap_err();
        assert_eq!(e.param, "from");
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let e = RawRowsParams::from_pairs(vec![
            ("from".into(), "2026-11-01".into()),
            ("from".into(), "2026-11-02".into()),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "from: given more than once");
    }
}

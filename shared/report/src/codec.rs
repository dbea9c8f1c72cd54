//! Compact binary form of a group's state and of a stored row (what the
//! [`crate::StateStore`] keeps). Format version 1:
//!
//! ```text
//! row     := 0x52 ncols:varint (name_len:varint name datum)*
//! state   := 0x01 key_len:varint datum* rows:zigzag acc_count:varint acc*
//! acc     := 0x00 count:zigzag
//!          | 0x01 count:zigzag int_sum:i128le dec_sum:[16] nscales:varint (scale:varint w:zigzag)*
//!                 float_count:zigzag float_sum:f64le float_comp:f64le
//!          | 0x02 n:varint (datum w:zigzag)*
//!          | 0x03 n:varint (lower:datum id:varint len:varint)* next_id:varint
//! chunk   := 0x4d n:varint (datum w:zigzag)*
//! datum   := tag:u8 payload   (see `put_datum`)
//! ```
//!
//! Tag 0x03 is a multiset stored in chunks (see [`crate::multiset`]): the
//! directory only; each chunk is a `chunk` blob of its own.

use crate::agg::{AccState, GroupState, OrdValue, SumAcc};
use crate::datum::Datum;
use crate::multiset::{Chunk, Chunks, Multiset};
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike};
use mdp_types::Row;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

const VERSION: u8 = 1;
/// First byte of a stored row (`R`).
const ROW_TAG: u8 = 0x52;
/// First byte of a stored multiset chunk (`M`).
const CHUNK_TAG: u8 = 0x4d;

/// The entries of one multiset chunk as stored.
pub(crate) fn encode_chunk<'a>(
    n: usize,
    entries: impl Iterator<Item = (&'a OrdValue, &'a i64)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 * n + 4);
    out.push(CHUNK_TAG);
    put_varint(&mut out, n as u64);
    for (v, w) in entries {
        put_datum(&mut out, &v.0);
        put_zigzag(&mut out, *w);
    }
    out
}

pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<Vec<(OrdValue, i64)>, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let tag = r.u8()?;
    if tag != CHUNK_TAG {
        return Err(format!("unknown chunk format {tag}"));
    }
    let n = r.len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = r.datum()?;
        out.push((OrdValue(d), r.zigzag()?));
    }
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    Ok(out)
}

/// A row image as stored: column name and value, names in the row's order.
pub(crate) fn encode_row(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * row.len() + 2);
    out.push(ROW_TAG);
    put_varint(&mut out, row.len() as u64);
    for (name, v) in row {
        put_bytes(&mut out, name.as_bytes());
        put_datum(&mut out, &Datum::from_value(v));
    }
    out
}

pub(crate) fn decode_row(bytes: &[u8]) -> Result<Row, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let tag = r.u8()?;
    if tag != ROW_TAG {
        return Err(format!("unknown row format {tag}"));
    }
    let n = r.len()?;
    let mut row = Row::new();
    for _ in 0..n {
        let name =
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| "invalid UTF-8 in a column name")?;
        row.insert(name, r.datum()?.to_value());
    }
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    Ok(row)
}

pub(crate) fn encode(state: &GroupState) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    put_varint(&mut out, state.key.len() as u64);
    for d in &state.key {
        put_datum(&mut out, d);
    }
    put_zigzag(&mut out, state.rows);
    put_varint(&mut out, state.accs.len() as u64);
    for acc in &state.accs {
        match acc {
            AccState::Count(n) => {
                out.push(0);
                put_zigzag(&mut out, *n);
            }
            AccState::Sum(s) => {
                out.push(1);
                put_zigzag(&mut out, s.count);
                out.extend_from_slice(&s.int_sum.to_le_bytes());
                out.extend_from_slice(&s.dec_sum.serialize());
                put_varint(&mut out, s.dec_scales.len() as u64);
                for (scale, w) in &s.dec_scales {
                    put_varint(&mut out, u64::from(*scale));
                    put_zigzag(&mut out, *w);
                }
                put_zigzag(&mut out, s.float_count);
                out.extend_from_slice(&s.float_sum.to_le_bytes());
                out.extend_from_slice(&s.float_comp.to_le_bytes());
            }
            AccState::Multiset(Multiset {
                chunks: Some(c), ..
            }) => {
                out.push(3);
                put_varint(&mut out, c.dir.len() as u64);
                for ch in &c.dir {
                    put_datum(&mut out, &ch.lower.0);
                    put_varint(&mut out, ch.id);
                    put_varint(&mut out, ch.len);
                }
                put_varint(&mut out, c.next_id);
            }
            AccState::Multiset(m) => {
                out.push(2);
                put_varint(&mut out, m.map.len() as u64);
                for (v, w) in &m.map {
                    put_datum(&mut out, &v.0);
                    put_zigzag(&mut out, *w);
                }
            }
        }
    }
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<GroupState, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(format!("unknown state format version {version}"));
    }
    let n = r.len()?;
    let mut key = Vec::with_capacity(n);
    for _ in 0..n {
        key.push(r.datum()?);
    }
    let rows = r.zigzag()?;
    let n = r.len()?;
    let mut accs = Vec::with_capacity(n);
    for _ in 0..n {
        accs.push(match r.u8()? {
            0 => AccState::Count(r.zigzag()?),
            1 => {
                let count = r.zigzag()?;
                let int_sum = i128::from_le_bytes(r.array::<16>()?);
                let dec_sum = Decimal::deserialize(r.array::<16>()?);
                let ns = r.len()?;
                let mut dec_scales = BTreeMap::new();
                for _ in 0..ns {
                    let s = u32::try_from(r.varint()?).map_err(|_| "scale out of range")?;
                    dec_scales.insert(s, r.zigzag()?);
                }
                AccState::Sum(SumAcc {
                    count,
                    int_sum,
                    dec_sum,
                    dec_scales,
                    float_count: r.zigzag()?,
                    float_sum: f64::from_le_bytes(r.array::<8>()?),
                    float_comp: f64::from_le_bytes(r.array::<8>()?),
                })
            }
            2 => {
                let n = r.len()?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let d = r.datum()?;
                    entries.push((OrdValue(d), r.zigzag()?));
                }
                AccState::Multiset(Multiset {
                    map: entries.into_iter().collect(),
                    chunks: None,
                })
            }
            3 => {
                let n = r.len()?;
                if n == 0 {
                    return Err("a chunked multiset without chunks".into());
                }
                let mut dir = Vec::with_capacity(n);
                for _ in 0..n {
                    let lower = OrdValue(r.datum()?);
                    dir.push(Chunk {
                        lower,
                        id: r.varint()?,
                        len: r.varint()?,
                        loaded: None,
                    });
                }
                let next_id = r.varint()?;
                AccState::Multiset(Multiset {
                    map: BTreeMap::new(),
                    chunks: Some(Chunks { dir, next_id }),
                })
            }
            t => return Err(format!("unknown accumulator tag {t}")),
        });
    }
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    Ok(GroupState { key, rows, accs })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_datum(out: &mut Vec<u8>, d: &Datum) {
    match d {
        Datum::Null => out.push(0),
        Datum::Int(i) => {
            out.push(1);
            put_zigzag(out, *i);
        }
        Datum::UInt(u) => {
            out.push(2);
            put_varint(out, *u);
        }
        Datum::Dec(v, s) => {
            out.push(3);
            out.extend_from_slice(&v.serialize());
            put_varint(out, u64::from(*s));
        }
        Datum::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Datum::Str(s) => {
            out.push(5);
            put_bytes(out, s.as_bytes());
        }
        Datum::Bytes(b) => {
            out.push(6);
            put_bytes(out, b);
        }
        Datum::Date(d) => {
            out.push(7);
            put_zigzag(out, i64::from(d.num_days_from_ce()));
        }
        Datum::DateTime(dt) => {
            out.push(8);
            put_zigzag(out, dt.and_utc().timestamp_micros());
        }
        Datum::Time(t) => {
            out.push(9);
            let micros = u64::from(t.num_seconds_from_midnight()) * 1_000_000
                + u64::from(t.nanosecond() / 1000);
            put_varint(out, micros);
        }
    }
}

use chrono::Datelike as _;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("truncated state")?;
        self.pos += 1;
        Ok(v)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self
            .b
            .get(self.pos..self.pos + N)
            .ok_or("truncated state")?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
        if n > self.b.len() {
            return Err("length beyond the end of the state".into());
        }
        Ok(n)
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&[u8], String> {
        let n = self.len()?;
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or("truncated state")?;
        self.pos += n;
        Ok(s)
    }

    fn datum(&mut self) -> Result<Datum, String> {
        Ok(match self.u8()? {
            0 => Datum::Null,
            1 => Datum::Int(self.zigzag()?),
            2 => Datum::UInt(self.varint()?),
            3 => {
                let v = Decimal::deserialize(self.array::<16>()?);
                let s = u32::try_from(self.varint()?).map_err(|_| "scale out of range")?;
                Datum::Dec(v, s)
            }
            4 => Datum::Float(f64::from_le_bytes(self.array::<8>()?)),
            5 => Datum::Str(
                String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "invalid UTF-8 in state")?,
            ),
            6 => Datum::Bytes(self.bytes()?.to_vec()),
            7 => {
                let days = i32::try_from(self.zigzag()?).map_err(|_| "date out of range")?;
                Datum::Date(NaiveDate::from_num_days_from_ce_opt(days).ok_or("invalid date")?)
            }
            8 => Datum::DateTime(
                DateTime::from_timestamp_micros(self.zigzag()?)
                    .ok_or("invalid datetime")?
                    .naive_utc(),
            ),
            9 => {
                let micros = self.varint()?;
                let secs = u32::try_from(micros / 1_000_000).map_err(|_| "time out of range")?;
                let nanos = (micros % 1_000_000) as u32 * 1000;
                Datum::Time(
                    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
                        .ok_or("invalid time")?,
                )
            }
            t => return Err(format!("unknown value tag {t}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::{AggKind, AggSpec};

    #[test]
    fn states_round_trip() {
        let specs = [
            AggSpec {
                kind: AggKind::CountStar,
                arg: None,
            },
            AggSpec {
                kind: AggKind::Sum,
                arg: None,
            },
            AggSpec {
                kind: AggKind::Min,
                arg: None,
            },
        ];
        let date = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap_or_default();
        let mut st = GroupState::new(vec![Datum::Int(42), Datum::Date(date), Datum::Null], &specs);
        st.rows = 3;
        let vals = [
            Datum::Dec("12.30".parse().unwrap_or_default(), 2),
            Datum::Float(-0.5),
            Datum::Int(-7),
            Datum::Str("pä id".into()),
            Datum::DateTime(date.and_hms_micro_opt(1, 2, 3, 4).unwrap_or_default()),
            Datum::Time(NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap_or_default()),
            Datum::UInt(u64::MAX),
            Datum::Bytes(vec![0, 255]),
        ];
        for v in &vals {
            st.accs[1].fold(AggKind::Sum, v, 1);
            st.accs[2].fold(AggKind::Min, v, 2);
        }
        st.accs[0] = AccState::Count(3);
        let bytes = encode(&st);
        let back = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, st);
        assert_eq!(encode(&back), bytes);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn rows_round_trip() {
        use mdp_types::Value;
        let mut row = Row::new();
        row.insert("id".into(), Value::I(7));
        row.insert(
            "amount".into(),
            Value::D("12.50".parse().unwrap_or_default()),
        );
        row.insert("city".into(), Value::S("Zürich".into()));
        row.insert("gone".into(), Value::Null);
        row.insert("big".into(), Value::U(u64::MAX));
        let bytes = encode_row(&row);
        let back = decode_row(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, row);
        assert!(matches!(&back["amount"], Value::D(d) if d.scale() == 2));
        assert!(decode_row(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_row(&[1, 0]).is_err());
    }
}

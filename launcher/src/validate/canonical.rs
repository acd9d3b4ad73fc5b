//! One canonical text per value, computed the same way from a Spanner value and from the MySQL
//! value the writer made of it, so that equal data gives equal text.
//!
//! The [`Rule`] of a column follows from the Spanner type and the MySQL column type together
//! (the writer converts by the target column's type, DESIGN §6.8):
//!
//! | rule | canonical text |
//! |---|---|
//! | [`Rule::Integer`] | decimal integer (`-12`); MySQL `bit` values as their unsigned integer |
//! | [`Rule::Bool`] | `1` or `0` (MySQL `tinyint(1)` holds booleans) |
//! | [`Rule::Decimal`] | the decimal without exponent, leading zeros, trailing fractional zeros or `+` (`1.50` → `1.5`, `-0.0` → `0`); with `round_to`, the Spanner value is first rounded half away from zero to the column's scale, as the writer (`writer.decimal_overflow = "round"`) and MySQL round |
//! | [`Rule::Float64`] | the shortest text that reads back as the same `f64` (`{:e}`), `NaN`, `inf`, `-inf`; `-0` is `0` |
//! | [`Rule::Float32`] | the same for `f32`, used when either side is single precision (MySQL `float`, Spanner `FLOAT32`); the Spanner value is rounded to `f32` first |
//! | [`Rule::Text`] | the string; for MySQL `char(n)` trailing spaces removed on both sides (MySQL removes them on read) |
//! | [`Rule::Bytes`] | lower-case hex of the bytes (Spanner `BYTES` decoded from base64); for MySQL `binary(n)` trailing zero bytes removed on both sides (MySQL pads with them) |
//! | [`Rule::Date`] | `YYYY-MM-DD` |
//! | [`Rule::DateTime`] | `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC for MySQL `timestamp`, in the source time zone for `datetime`; the Spanner value (nanoseconds) is first rounded half up to the column's fractional digits, as MySQL rounds |
//! | [`Rule::WholeSeconds`] | as [`Rule::DateTime`], both sides cut to whole seconds: for Spanner `TIMESTAMP` columns replicated through the Spanner emulator, whose change records cut TIMESTAMP values to whole seconds |
//! | [`Rule::Json`] | the JSON document re-serialized with object keys sorted and no spaces |
//! | [`Rule::JoinedArray`] | a Spanner array in a text column, as the writer writes it there (`writer.array_text = "comma_joined"`): the elements joined with `,`, NULL as an empty element; the MySQL text as it is |
//! | [`Rule::Array`] | a JSON array of the elements' texts (strings as they are, numbers and booleans as JSON text, NULL as `null`), so `["1","2"]` and `[1,2]` agree; for MySQL `set` columns the members sorted and joined with `,` |
//!
//! NULL is its own value, distinct from every text. A value that cannot be read by its rule
//! (text that is not a number in an integer column, say) keeps its raw text, so it compares
//! unequal to anything well-formed instead of failing the run.

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, TimeZone, Utc};
use google_cloud_spanner::value::{Kind, Value as SpannerValue};
use mysql_async::Value as MySqlValue;
use serde_json::Value as Json;

use super::zone::SourceZone;

/// How a column's values are made canonical.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Integers.
    Integer,
    /// Booleans as `1`/`0`.
    Bool,
    /// Exact decimals; `round_to` rounds Spanner values to the column's scale first.
    Decimal {
        /// The MySQL column's scale, when the writer rounds to it.
        round_to: Option<u32>,
    },
    /// Double-precision floats.
    Float64,
    /// Single-precision floats.
    Float32,
    /// Text; `trim_spaces` for MySQL `char(n)`.
    Text {
        /// Remove trailing spaces.
        trim_spaces: bool,
    },
    /// Bytes; `trim_zeros` for MySQL `binary(n)`.
    Bytes {
        /// Remove trailing zero bytes.
        trim_zeros: bool,
    },
    /// Dates.
    Date,
    /// Instants, rounded to `fsp` fractional digits, in UTC or the source zone.
    DateTime {
        /// Fractional-second digits of the MySQL column, 0 to 6.
        fsp: u8,
        /// `None` for UTC (MySQL `timestamp`), the source zone for `datetime`.
        zone: Option<SourceZone>,
    },
    /// Instants cut to whole seconds on both sides (the emulator's change records).
    WholeSeconds {
        /// `None` for UTC (MySQL `timestamp`), the source zone for `datetime`.
        zone: Option<SourceZone>,
    },
    /// JSON documents.
    Json,
    /// Arrays in text columns, comma-joined as the writer writes them.
    JoinedArray,
    /// Arrays; `set` for MySQL `set` columns.
    Array {
        /// The MySQL column is a `set`.
        set: bool,
    },
}

/// A canonical value: `None` is NULL.
pub type Canonical = Option<String>;

/// The writer's choices that change what it stores (`writer.decimal_overflow`,
/// `writer.array_text`), so that validation compares by the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterChoices {
    /// Decimals with more fractional digits than the column are rounded.
    pub round_decimals: bool,
    /// Arrays in text columns are comma-joined.
    pub join_arrays: bool,
    /// The data went through the Spanner emulator, whose change records cut TIMESTAMP values
    /// to whole seconds: TIMESTAMP columns are compared to the second.
    pub emulator_timestamps: bool,
}

impl Default for WriterChoices {
    /// The writer's defaults: round, comma-join.
    fn default() -> Self {
        Self {
            round_decimals: true,
            join_arrays: true,
            emulator_timestamps: false,
        }
    }
}

impl From<&revrepl_config::WriterConfig> for WriterChoices {
    fn from(config: &revrepl_config::WriterConfig) -> Self {
        Self {
            round_decimals: config.decimal_overflow == revrepl_config::DecimalOverflow::Round,
            join_arrays: config.array_text == revrepl_config::ArrayText::CommaJoined,
            emulator_timestamps: false,
        }
    }
}

/// What is known of a MySQL column for choosing its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MySqlColumn<'a> {
    /// `DATA_TYPE`, e.g. `varchar`.
    pub data_type: &'a str,
    /// `DATETIME_PRECISION`.
    pub datetime_precision: Option<u8>,
    /// `NUMERIC_SCALE`.
    pub numeric_scale: Option<u32>,
    /// A MariaDB JSON column (`LONGTEXT` with `CHECK (json_valid(…))`).
    pub mariadb_json: bool,
}

/// The rule for a Spanner column of type `spanner_type` (`INT64`, `STRING(MAX)`,
/// `ARRAY<INT64>`...) stored in a MySQL column of `data_type` (`int`, `varchar`...) with
/// `datetime_precision` fractional digits; `zone` is the writer's source time zone. The
/// writer's default [`WriterChoices`]; see [`rule_for_column`].
pub fn rule_for(
    spanner_type: &str,
    data_type: &str,
    datetime_precision: Option<u8>,
    zone: SourceZone,
) -> Rule {
    let column = MySqlColumn {
        data_type,
        datetime_precision,
        ..MySqlColumn::default()
    };
    rule_for_column(spanner_type, &column, zone, WriterChoices::default())
}

/// The rule for a Spanner column of type `spanner_type` stored in `column`, by the writer's
/// `choices`.
pub fn rule_for_column(
    spanner_type: &str,
    column: &MySqlColumn<'_>,
    zone: SourceZone,
    choices: WriterChoices,
) -> Rule {
    let data_type = if column.mariadb_json {
        "json"
    } else {
        column.data_type
    };
    let datetime_precision = column.datetime_precision;
    let spanner = spanner_type.trim().to_ascii_uppercase();
    let is_array = spanner.starts_with("ARRAY");
    let scalar = spanner
        .trim_start_matches("ARRAY<")
        .split(['(', '>'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let fsp = datetime_precision.unwrap_or(0).min(6);
    let data_type = data_type.trim().to_ascii_lowercase();
    let text_column = matches!(
        data_type.as_str(),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
    );
    match data_type.as_str() {
        "set" => Rule::Array { set: true },
        _ if is_array && text_column && choices.join_arrays => Rule::JoinedArray,
        _ if is_array => Rule::Array { set: false },
        "json" => Rule::Json,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bit"
            if scalar == "BOOL" =>
        {
            Rule::Bool
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bit" => {
            Rule::Integer
        }
        "decimal" | "numeric" => Rule::Decimal {
            round_to: column.numeric_scale.filter(|_| choices.round_decimals),
        },
        "float" => Rule::Float32,
        "double" | "real" if scalar == "FLOAT32" => Rule::Float32,
        "double" | "real" => Rule::Float64,
        "date" => Rule::Date,
        "datetime" if choices.emulator_timestamps && scalar == "TIMESTAMP" => {
            Rule::WholeSeconds { zone: Some(zone) }
        }
        "timestamp" if choices.emulator_timestamps && scalar == "TIMESTAMP" => {
            Rule::WholeSeconds { zone: None }
        }
        "datetime" => Rule::DateTime {
            fsp,
            zone: Some(zone),
        },
        "timestamp" => Rule::DateTime { fsp, zone: None },
        "binary" => Rule::Bytes { trim_zeros: true },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            Rule::Bytes { trim_zeros: false }
        }
        _ if scalar == "JSON" => Rule::Json,
        _ if scalar == "BYTES" => Rule::Bytes { trim_zeros: false },
        "char" => Rule::Text { trim_spaces: true },
        _ => Rule::Text { trim_spaces: false },
    }
}

/// The canonical text of a Spanner value (as the client returns it: INT64, NUMERIC, DATE,
/// TIMESTAMP, BYTES and JSON as strings, floats as numbers or `"NaN"`, arrays as lists).
pub fn from_spanner(rule: &Rule, value: &SpannerValue) -> Canonical {
    match value.kind() {
        Kind::Null => return None,
        Kind::List => {
            let list = value.as_list()?;
            let elements: Vec<Option<String>> = list.iter().map(spanner_scalar_text).collect();
            if *rule == Rule::JoinedArray {
                return Some(joined_text(elements));
            }
            return Some(array_text(rule, elements));
        }
        _ => {}
    }
    let text = spanner_scalar_text(value)?;
    Some(match rule {
        Rule::Integer => integer_text(&text),
        Rule::Bool => match value.as_bool() {
            Some(flag) => u8::from(flag).to_string(),
            None => integer_text(&text),
        },
        Rule::Decimal { round_to: None } => decimal_text(&text),
        Rule::Decimal {
            round_to: Some(scale),
        } => round_decimal_text(&decimal_text(&text), *scale),
        Rule::Float64 => match value.as_f64() {
            Some(number) => float64_text(number),
            None => text.parse::<f64>().map_or(text, float64_text),
        },
        Rule::Float32 => match value.as_f64() {
            Some(number) => float32_text(number as f32),
            None => text.parse::<f32>().map_or(text, float32_text),
        },
        Rule::Text { trim_spaces } => trim_text(text, *trim_spaces),
        Rule::Bytes { trim_zeros } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .unwrap_or_else(|_| text.clone().into_bytes());
            hex_text(&bytes, *trim_zeros)
        }
        Rule::Date => text,
        Rule::DateTime { fsp, zone } => match DateTime::parse_from_rfc3339(&text) {
            Ok(instant) => {
                let rounded = round_half_up(instant.with_timezone(&Utc), *fsp);
                let local = match zone {
                    None => rounded.naive_utc(),
                    Some(zone) => zone.local(rounded),
                };
                datetime_text(local)
            }
            Err(_) => text,
        },
        Rule::WholeSeconds { zone } => match DateTime::parse_from_rfc3339(&text) {
            Ok(instant) => {
                let cut = instant.with_timezone(&Utc).trunc_subsecs(0);
                let local = match zone {
                    None => cut.naive_utc(),
                    Some(zone) => zone.local(cut),
                };
                datetime_text(local)
            }
            Err(_) => text,
        },
        Rule::Json => json_text(&text),
        Rule::JoinedArray => match serde_json::from_str::<Json>(&text) {
            Ok(Json::Array(items)) => joined_text(items.into_iter().map(json_element).collect()),
            _ => text,
        },
        Rule::Array { .. } => array_from_json_text(rule, &text),
    })
}

/// The canonical text of a MySQL value read with the binary protocol (prepared statement),
/// on a session with `time_zone = '+00:00'`.
pub fn from_mysql(rule: &Rule, value: &MySqlValue) -> Canonical {
    let text = match value {
        MySqlValue::NULL => return None,
        MySqlValue::Bytes(bytes) => {
            return Some(match rule {
                Rule::Bytes { trim_zeros } => hex_text(bytes, *trim_zeros),
                Rule::Integer | Rule::Bool if !bytes.is_empty() && !is_ascii_number(bytes) => {
                    // `bit(n)` columns arrive as big-endian bytes.
                    let number = bytes
                        .iter()
                        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
                    if *rule == Rule::Bool {
                        u8::from(number != 0).to_string()
                    } else {
                        number.to_string()
                    }
                }
                _ => from_mysql_text(rule, utf8_or_hex(bytes)),
            });
        }
        MySqlValue::Int(number) => number.to_string(),
        MySqlValue::UInt(number) => number.to_string(),
        MySqlValue::Float(number) => {
            return Some(match rule {
                Rule::Float64 => float64_text(f64::from(*number)),
                Rule::Decimal { .. } => decimal_text(&number.to_string()),
                _ => float32_text(*number),
            });
        }
        MySqlValue::Double(number) => {
            return Some(match rule {
                Rule::Float32 => float32_text(*number as f32),
                Rule::Decimal { .. } => decimal_text(&number.to_string()),
                _ => float64_text(*number),
            });
        }
        MySqlValue::Date(year, month, day, hour, minute, second, micros) => {
            let date =
                NaiveDate::from_ymd_opt(i32::from(*year), u32::from(*month), u32::from(*day));
            let moment = date.and_then(|d| {
                d.and_hms_micro_opt(
                    u32::from(*hour),
                    u32::from(*minute),
                    u32::from(*second),
                    *micros,
                )
            });
            return Some(match (rule, date, moment) {
                (Rule::Date, Some(date), _) => date.format("%Y-%m-%d").to_string(),
                (Rule::WholeSeconds { .. }, _, Some(moment)) => {
                    datetime_text(moment.trunc_subsecs(0))
                }
                (_, _, Some(moment)) => datetime_text(moment),
                _ => format!(
                    "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}"
                ),
            });
        }
        MySqlValue::Time(negative, days, hours, minutes, seconds, micros) => {
            let hours = u64::from(*days) * 24 + u64::from(*hours);
            let mut text = format!(
                "{}{hours:02}:{minutes:02}:{seconds:02}",
                if *negative { "-" } else { "" }
            );
            if *micros > 0 {
                let _ = write!(text, ".{micros:06}");
            }
            text
        }
    };
    Some(from_mysql_text(rule, text))
}

fn from_mysql_text(rule: &Rule, text: String) -> String {
    match rule {
        Rule::Integer => integer_text(&text),
        Rule::Bool => match text.as_str() {
            "true" | "TRUE" => "1".into(),
            "false" | "FALSE" => "0".into(),
            _ => match text.trim().parse::<i128>() {
                Ok(number) => u8::from(number != 0).to_string(),
                Err(_) => text,
            },
        },
        Rule::Decimal { .. } => decimal_text(&text),
        Rule::Float64 => text.trim().parse::<f64>().map_or(text, float64_text),
        Rule::Float32 => text.trim().parse::<f32>().map_or(text, float32_text),
        Rule::Text { trim_spaces } => trim_text(text, *trim_spaces),
        Rule::Bytes { trim_zeros } => hex_text(text.as_bytes(), *trim_zeros),
        Rule::Date => text.chars().take(10).collect(),
        Rule::DateTime { .. } => {
            NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f").map_or(text, datetime_text)
        }
        Rule::WholeSeconds { .. } => NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
            .map_or(text, |moment| datetime_text(moment.trunc_subsecs(0))),
        Rule::Json => json_text(&text),
        Rule::JoinedArray => text,
        Rule::Array { .. } => array_from_json_text(rule, &text),
    }
}

/// Elements joined with `,`, NULL as nothing (the writer's `comma_joined` text).
fn joined_text(elements: Vec<Option<String>>) -> String {
    elements
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect::<Vec<_>>()
        .join(",")
}

fn json_element(item: Json) -> Option<String> {
    match item {
        Json::Null => None,
        Json::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Rounds canonical decimal `text` (from [`decimal_text`]) to `scale` fractional digits, half
/// away from zero, as MySQL and the writer round. Text that is not a plain decimal stays.
fn round_decimal_text(text: &str, scale: u32) -> String {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = scale as usize;
    if fraction.len() <= scale || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text.to_string();
    }
    let up = fraction.as_bytes()[scale] >= b'5';
    let mut kept: Vec<u8> = whole.bytes().chain(fraction[..scale].bytes()).collect();
    if up {
        let mut carry = true;
        for digit in kept.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            kept.insert(0, b'1');
        }
    }
    let split = kept.len() - scale;
    let rounded = format!(
        "{}{}.{}",
        if negative { "-" } else { "" },
        String::from_utf8_lossy(&kept[..split]),
        String::from_utf8_lossy(&kept[split..])
    );
    decimal_text(&rounded)
}

/// Spanner scalars as text: strings as they are, numbers as JSON numbers, booleans as
/// `true`/`false`; NULL is `None`.
fn spanner_scalar_text(value: &SpannerValue) -> Option<String> {
    match value.kind() {
        Kind::Null => None,
        Kind::String => value.as_str().map(str::to_string),
        Kind::Bool => value.as_bool().map(|b| b.to_string()),
        Kind::Number => value.as_f64().map(|n| {
            serde_json::Number::from_f64(n).map_or_else(|| n.to_string(), |n| n.to_string())
        }),
        _ => Some(format!("{value:?}")),
    }
}

fn trim_text(text: String, trim_spaces: bool) -> String {
    if trim_spaces {
        text.trim_end_matches(' ').to_string()
    } else {
        text
    }
}

fn is_ascii_number(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+')
}

fn utf8_or_hex(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("0x{}", hex_text(bytes, false)),
    }
}

/// A decimal integer without sign noise; non-numbers stay as they are.
fn integer_text(text: &str) -> String {
    match text.trim().parse::<i128>() {
        Ok(number) => number.to_string(),
        Err(_) => decimal_text(text),
    }
}

/// A decimal without `+`, exponent, leading zeros or trailing fractional zeros.
pub fn decimal_text(text: &str) -> String {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        // An exponent or junk: read it as a float if possible, else keep it.
        return match trimmed.parse::<f64>() {
            Ok(number)
                if number.is_finite() && (trimmed.contains('e') || trimmed.contains('E')) =>
            {
                decimal_text(&format!("{number}"))
            }
            _ => trimmed.to_string(),
        };
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let mut out = String::new();
    if negative && !(whole.is_empty() && fraction.is_empty()) {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// The shortest round-trip text of an `f64`.
pub fn float64_text(number: f64) -> String {
    if number == 0.0 {
        "0".into()
    } else if number.is_nan() {
        "NaN".into()
    } else {
        format!("{number:e}")
    }
}

/// The shortest round-trip text of an `f32`.
pub fn float32_text(number: f32) -> String {
    if number == 0.0 {
        "0".into()
    } else if number.is_nan() {
        "NaN".into()
    } else {
        format!("{number:e}")
    }
}

fn hex_text(bytes: &[u8], trim_zeros: bool) -> String {
    let end = if trim_zeros {
        bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
    } else {
        bytes.len()
    };
    let mut out = String::with_capacity(end * 2);
    for byte in &bytes[..end] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Rounds half up to `fsp` fractional digits, as MySQL stores fractional seconds.
fn round_half_up(instant: DateTime<Utc>, fsp: u8) -> DateTime<Utc> {
    let unit = 10i64.pow(9 - u32::from(fsp.min(6)));
    let nanos = i64::from(instant.timestamp_subsec_nanos());
    let rounded = (nanos + unit / 2) / unit * unit;
    let base = instant.trunc_subsecs(0);
    Utc.timestamp_opt(base.timestamp(), 0)
        .single()
        .map_or(instant, |t| t + chrono::Duration::nanoseconds(rounded))
}

fn datetime_text(moment: NaiveDateTime) -> String {
    moment.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// JSON re-serialized with sorted keys; text that is not JSON stays as it is.
pub fn json_text(text: &str) -> String {
    match serde_json::from_str::<Json>(text) {
        Ok(value) => {
            let mut out = String::new();
            write_sorted(&value, &mut out);
            out
        }
        Err(_) => text.to_string(),
    }
}

fn write_sorted(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String((*key).clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(*key) {
                    write_sorted(inner, out);
                }
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn array_text(rule: &Rule, elements: Vec<Option<String>>) -> String {
    if let Rule::Array { set: true } = rule {
        let mut members: Vec<String> = elements.into_iter().flatten().collect();
        members.sort();
        return members.join(",");
    }
    let items: Vec<Json> = elements
        .into_iter()
        .map(|e| e.map_or(Json::Null, Json::String))
        .collect();
    Json::Array(items).to_string()
}

fn array_from_json_text(rule: &Rule, text: &str) -> String {
    if let Rule::Array { set: true } = rule {
        let members = text
            .split(',')
            .filter(|m| !m.is_empty())
            .map(|m| Some(m.to_string()))
            .collect();
        return array_text(rule, members);
    }
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Array(items)) => {
            let elements = items
                .into_iter()
                .map(|item| match item {
                    Json::Null => None,
                    Json::String(s) => Some(s),
                    other => Some(other.to_string()),
                })
                .collect();
            array_text(rule, elements)
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> SourceZone {
        "+00:00".parse().expect("zone")
    }

    fn spanner(text: &str) -> SpannerValue {
        SpannerValue::from(text.to_string())
    }

    fn both(rule: &Rule, s: &SpannerValue, m: &MySqlValue) -> (Canonical, Canonical) {
        (from_spanner(rule, s), from_mysql(rule, m))
    }

    fn same(rule: &Rule, s: SpannerValue, m: MySqlValue) {
        let (a, b) = both(rule, &s, &m);
        assert_eq!(a, b, "{rule:?}: {s:?} vs {m:?}");
    }

    fn differ(rule: &Rule, s: SpannerValue, m: MySqlValue) {
        let (a, b) = both(rule, &s, &m);
        assert_ne!(a, b, "{rule:?}: {s:?} vs {m:?}");
    }

    #[test]
    fn rules_follow_both_types() {
        let z = utc();
        assert_eq!(rule_for("INT64", "bigint", None, z), Rule::Integer);
        assert_eq!(rule_for("BOOL", "tinyint", None, z), Rule::Bool);
        assert_eq!(rule_for("FLOAT64", "float", None, z), Rule::Float32);
        assert_eq!(rule_for("FLOAT32", "double", None, z), Rule::Float32);
        assert_eq!(rule_for("FLOAT64", "double", None, z), Rule::Float64);
        assert_eq!(
            rule_for("STRING(10)", "char", None, z),
            Rule::Text { trim_spaces: true }
        );
        assert_eq!(
            rule_for("BYTES(MAX)", "longtext", None, z),
            Rule::Bytes { trim_zeros: false }
        );
        assert_eq!(rule_for("JSON", "longtext", None, z), Rule::Json);
        assert_eq!(
            rule_for("ARRAY<INT64>", "json", None, z),
            Rule::Array { set: false }
        );
        assert_eq!(
            rule_for("ARRAY<STRING(MAX)>", "set", None, z),
            Rule::Array { set: true }
        );
        assert_eq!(
            rule_for("TIMESTAMP", "timestamp", Some(3), z),
            Rule::DateTime { fsp: 3, zone: None }
        );
    }

    #[test]
    fn integers_booleans_and_decimals() {
        same(&Rule::Integer, spanner("-42"), MySqlValue::Int(-42));
        same(
            &Rule::Integer,
            spanner("18446744073709551615"),
            MySqlValue::UInt(u64::MAX),
        );
        differ(&Rule::Integer, spanner("1"), MySqlValue::Int(2));
        same(&Rule::Bool, SpannerValue::from(true), MySqlValue::Int(1));
        same(
            &Rule::Bool,
            SpannerValue::from(false),
            MySqlValue::Bytes(b"0".to_vec()),
        );
        same(&Rule::Integer, spanner("5"), MySqlValue::Bytes(vec![0, 5]));
        same(
            &Rule::Decimal { round_to: None },
            spanner("1.5"),
            MySqlValue::Bytes(b"1.50".to_vec()),
        );
        same(
            &Rule::Decimal { round_to: None },
            spanner("-0.00"),
            MySqlValue::Bytes(b"0.00".to_vec()),
        );
        same(
            &Rule::Decimal { round_to: None },
            spanner("007.10"),
            MySqlValue::Bytes(b"7.1".to_vec()),
        );
        differ(
            &Rule::Decimal { round_to: None },
            spanner("1.51"),
            MySqlValue::Bytes(b"1.50".to_vec()),
        );
        assert_eq!(decimal_text("1e3"), "1000");
        assert_eq!(decimal_text("+12"), "12");
    }

    /// Issue 12: a decimal the writer rounded and an array it comma-joined match their
    /// Spanner values; anything else that differs is still reported.
    #[test]
    fn validation_follows_the_writers_rounding_and_joining() {
        let z = utc();
        let decimal = MySqlColumn {
            data_type: "decimal",
            numeric_scale: Some(2),
            ..MySqlColumn::default()
        };
        let rounding = rule_for_column("NUMERIC", &decimal, z, WriterChoices::default());
        assert_eq!(rounding, Rule::Decimal { round_to: Some(2) });
        same(
            &rounding,
            spanner("444.222"),
            MySqlValue::Bytes(b"444.22".to_vec()),
        );
        same(
            &rounding,
            spanner("444.225"),
            MySqlValue::Bytes(b"444.23".to_vec()),
        );
        same(
            &rounding,
            spanner("-444.225"),
            MySqlValue::Bytes(b"-444.23".to_vec()),
        );
        same(
            &rounding,
            spanner("99.995"),
            MySqlValue::Bytes(b"100.00".to_vec()),
        );
        same(
            &rounding,
            spanner("-0.004"),
            MySqlValue::Bytes(b"0.00".to_vec()),
        );
        differ(
            &rounding,
            spanner("444.222"),
            MySqlValue::Bytes(b"444.21".to_vec()),
        );
        let strict = WriterChoices {
            round_decimals: false,
            ..WriterChoices::default()
        };
        let exact = rule_for_column("NUMERIC", &decimal, z, strict);
        differ(
            &exact,
            spanner("444.222"),
            MySqlValue::Bytes(b"444.22".to_vec()),
        );

        let varchar = MySqlColumn {
            data_type: "varchar",
            ..MySqlColumn::default()
        };
        let joined = rule_for_column("ARRAY<STRING(MAX)>", &varchar, z, WriterChoices::default());
        assert_eq!(joined, Rule::JoinedArray);
        let list = SpannerValue::from(vec![Some("1".to_string()), None, Some("2".to_string())]);
        same(&joined, list.clone(), MySqlValue::Bytes(b"1,,2".to_vec()));
        differ(&joined, list.clone(), MySqlValue::Bytes(b"1,2".to_vec()));
        let as_json = WriterChoices {
            join_arrays: false,
            ..WriterChoices::default()
        };
        let json_rule = rule_for_column("ARRAY<STRING(MAX)>", &varchar, z, as_json);
        same(
            &json_rule,
            list,
            MySqlValue::Bytes(br#"["1",null,"2"]"#.to_vec()),
        );
        // MariaDB JSON columns keep JSON arrays.
        let mariadb_json = MySqlColumn {
            data_type: "longtext",
            mariadb_json: true,
            ..MySqlColumn::default()
        };
        assert_eq!(
            rule_for_column("ARRAY<INT64>", &mariadb_json, z, WriterChoices::default()),
            Rule::Array { set: false }
        );
    }

    /// Issue 12.16: through the emulator, TIMESTAMP values reach MySQL cut to whole seconds.
    #[test]
    fn emulator_timestamps_compare_to_the_second() {
        let column = MySqlColumn {
            data_type: "datetime",
            datetime_precision: Some(6),
            ..MySqlColumn::default()
        };
        let emulator = WriterChoices {
            emulator_timestamps: true,
            ..WriterChoices::default()
        };
        let rule = rule_for_column("TIMESTAMP", &column, utc(), emulator);
        assert_eq!(rule, Rule::WholeSeconds { zone: Some(utc()) });
        let stored = MySqlValue::Date(2024, 1, 5, 10, 33, 50, 0);
        same(&rule, spanner("2024-01-05T10:33:50.789Z"), stored.clone());
        differ(&rule, spanner("2024-01-05T10:33:51.001Z"), stored.clone());
        let exact = rule_for_column("TIMESTAMP", &column, utc(), WriterChoices::default());
        differ(&exact, spanner("2024-01-05T10:33:50.789Z"), stored);
    }

    #[test]
    fn floats_compare_exactly_after_round_trip() {
        let third = 1.0f64 / 3.0;
        same(
            &Rule::Float64,
            SpannerValue::from(third),
            MySqlValue::Double(third),
        );
        differ(
            &Rule::Float64,
            SpannerValue::from(third),
            MySqlValue::Double(third + f64::EPSILON),
        );
        same(
            &Rule::Float64,
            SpannerValue::from(-0.0f64),
            MySqlValue::Double(0.0),
        );
        same(&Rule::Float64, spanner("NaN"), MySqlValue::Double(f64::NAN));
        // A double stored in a MySQL `float` column is compared at single precision.
        same(
            &Rule::Float32,
            SpannerValue::from(0.1f64),
            MySqlValue::Float(0.1f32),
        );
        differ(
            &Rule::Float32,
            SpannerValue::from(0.1f64),
            MySqlValue::Float(0.2f32),
        );
        assert_eq!(float64_text(1e300), "1e300");
    }

    #[test]
    fn text_bytes_and_json() {
        let text = Rule::Text { trim_spaces: false };
        same(
            &text,
            spanner("a \"q\" \\ ü 🦀"),
            MySqlValue::Bytes("a \"q\" \\ ü 🦀".into()),
        );
        differ(&text, spanner("a "), MySqlValue::Bytes(b"a".to_vec()));
        same(
            &Rule::Text { trim_spaces: true },
            spanner("a "),
            MySqlValue::Bytes(b"a".to_vec()),
        );
        same(
            &Rule::Bytes { trim_zeros: false },
            spanner("AAEC"),
            MySqlValue::Bytes(vec![0, 1, 2]),
        );
        same(
            &Rule::Bytes { trim_zeros: true },
            spanner("AQ=="),
            MySqlValue::Bytes(vec![1, 0, 0]),
        );
        same(
            &Rule::Json,
            spanner(r#"{"b":1,"a":[true,null]}"#),
            MySqlValue::Bytes(br#"{"a": [true, null], "b": 1}"#.to_vec()),
        );
        differ(
            &Rule::Json,
            spanner(r#"{"a":1}"#),
            MySqlValue::Bytes(br#"{"a":2}"#.to_vec()),
        );
        assert_eq!(from_spanner(&text, &SpannerValue::null()), None);
        assert_eq!(from_mysql(&text, &MySqlValue::NULL), None);
        differ(&text, spanner(""), MySqlValue::NULL);
    }

    #[test]
    fn arrays_and_sets() {
        let list = SpannerValue::from(vec![
            SpannerValue::from("1".to_string()),
            SpannerValue::null(),
        ]);
        same(
            &Rule::Array { set: false },
            list.clone(),
            MySqlValue::Bytes(br#"[1, null]"#.to_vec()),
        );
        same(
            &Rule::Array { set: false },
            list,
            MySqlValue::Bytes(br#"["1",null]"#.to_vec()),
        );
        let members = SpannerValue::from(vec![
            SpannerValue::from("b".to_string()),
            SpannerValue::from("a".to_string()),
        ]);
        same(
            &Rule::Array { set: true },
            members,
            MySqlValue::Bytes(b"a,b".to_vec()),
        );
    }

    #[test]
    fn dates_and_times() {
        same(
            &Rule::Date,
            spanner("2024-01-05"),
            MySqlValue::Date(2024, 1, 5, 0, 0, 0, 0),
        );
        let utc_rule = Rule::DateTime { fsp: 6, zone: None };
        same(
            &utc_rule,
            spanner("2024-01-05T10:33:50.123456789Z"),
            MySqlValue::Date(2024, 1, 5, 10, 33, 50, 123_457),
        );
        let seconds = Rule::DateTime { fsp: 0, zone: None };
        same(
            &seconds,
            spanner("2024-01-05T10:33:50.5Z"),
            MySqlValue::Date(2024, 1, 5, 10, 33, 51, 0),
        );
        differ(
            &seconds,
            spanner("2024-01-05T10:33:50Z"),
            MySqlValue::Date(2024, 1, 5, 10, 33, 51, 0),
        );
        // `datetime` holds wall-clock time in the source zone.
        let new_york = Rule::DateTime {
            fsp: 0,
            zone: Some("America/New_York".parse().expect("zone")),
        };
        same(
            &new_york,
            spanner("2024-07-01T16:00:00Z"),
            MySqlValue::Date(2024, 7, 1, 12, 0, 0, 0),
        );
        same(
            &new_york,
            spanner("2024-01-05T17:00:00Z"),
            MySqlValue::Date(2024, 1, 5, 12, 0, 0, 0),
        );
        let offset = Rule::DateTime {
            fsp: 0,
            zone: Some("+05:30".parse().expect("zone")),
        };
        same(
            &offset,
            spanner("2024-01-05T00:00:00Z"),
            MySqlValue::Date(2024, 1, 5, 5, 30, 0, 0),
        );
    }
}

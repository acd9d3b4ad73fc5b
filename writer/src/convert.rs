//! Spanner change-stream values → MySQL values, by the target column's type (DESIGN §6.8).
//!
//! Change records carry Spanner values in JSON: INT64 and NUMERIC as strings, FLOAT64 as
//! numbers (NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`), BOOL,
//! STRING, BYTES as base64, DATE as `YYYY-MM-DD`, TIMESTAMP as RFC 3339 with up to nine
//! fractional digits, JSON as JSON text in a string, arrays as JSON arrays. Each becomes a
//! [`mysql_async::Value`] bound as a statement parameter, never pasted into SQL text.
//!
//! Rules worth knowing:
//!
//! - Nothing is silently altered: a value that does not fit the column (integer out of range,
//!   a decimal with too many integer digits, a string longer than the column, NaN in a
//!   `double`, a name that is not an `enum` member, a time outside `timestamp`'s range) is a
//!   [`ConversionError`], which names the value's type but never the value.
//! - One alteration is made on purpose, as MySQL itself makes it (a note, even in strict mode)
//!   and the reference relies on it: a decimal with more fractional digits than the column's
//!   scale is rounded half away from zero ([`DecimalOverflow::Round`], the default;
//!   [`DecimalOverflow::Error`] refuses it instead). [`Converted::rounded`] says so, for the
//!   metric and the log.
//! - An array written to a text column becomes its elements joined with `,` (the reference's
//!   text, the inverse of the migration tool's `SET`/string → `ARRAY` mapping), or JSON text
//!   with [`ArrayText::Json`]. `JSON` columns always receive JSON text.
//! - `datetime` columns receive the wall-clock time in the configured [`SourceTimeZone`] (an
//!   IANA name, with daylight-saving rules, or a fixed offset). `timestamp` columns receive the
//!   exact instant: the writer's session runs with `time_zone = '+00:00'` and binds UTC, which
//!   an application reading in the source time zone sees as the same local time — without the
//!   ambiguity of the hour repeated when clocks go back.
//! - Fractional seconds are rounded to the column's precision half up, as MySQL rounds.
//! - A string goes to a binary column as its bytes when the mapping says the Spanner column is
//!   a `STRING`; otherwise binary columns expect base64 (`BYTES`). A `BYTES` value goes to a
//!   text column decoded when the mapping says it is `BYTES`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use mysql_async::Value;
use serde_json::Value as Json;

use crate::mapping::{SpannerScalar, SpannerType};
use crate::schema::{ColumnKind, TargetColumn};

/// The time zone MySQL `datetime` values are written in: an IANA zone (with its daylight-saving
/// rules) or a fixed offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceTimeZone {
    /// A fixed offset such as `+05:30`; `+00:00` is UTC.
    Offset(FixedOffset),
    /// An IANA zone such as `America/New_York`.
    Named(Tz),
}

impl Default for SourceTimeZone {
    /// UTC (`+00:00`), the reference's default `sourceDbTimezoneOffset`.
    fn default() -> Self {
        Self::Offset(chrono::Offset::fix(&Utc))
    }
}

/// Why text is not a time zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "time zone {text:?} is invalid: expected an IANA name such as America/New_York, UTC, or an offset such as +05:30"
)]
pub struct TimeZoneError {
    text: String,
}

impl FromStr for SourceTimeZone {
    type Err = TimeZoneError;

    /// Accepts `UTC`, `Z`, `+HH:MM`, `-HH:MM`, `+HHMM`, `+HH` and IANA names.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || TimeZoneError {
            text: text.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("utc") || trimmed == "Z" {
            return Ok(Self::default());
        }
        if let Some(rest) = trimmed.strip_prefix(['+', '-']) {
            let sign = if trimmed.starts_with('-') { -1 } else { 1 };
            let digits: String = rest.chars().filter(|c| *c != ':').collect();
            if !digits.chars().all(|c| c.is_ascii_digit())
                || !matches!(digits.len(), 2 | 4)
                || (rest.contains(':') && (rest.len() != 5 || rest.find(':') != Some(2)))
            {
                return Err(err());
            }
            let hours: i32 = digits[..2].parse().map_err(|_| err())?;
            let minutes: i32 = if digits.len() == 4 {
                digits[2..].parse().map_err(|_| err())?
            } else {
                0
            };
            if hours > 14 || minutes > 59 {
                return Err(err());
            }
            return FixedOffset::east_opt(sign * (hours * 3_600 + minutes * 60))
                .map(Self::Offset)
                .ok_or_else(err);
        }
        trimmed.parse::<Tz>().map(Self::Named).map_err(|_| err())
    }
}

impl fmt::Display for SourceTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Offset(offset) => write!(f, "{offset}"),
            Self::Named(zone) => write!(f, "{}", zone.name()),
        }
    }
}

impl SourceTimeZone {
    /// The wall-clock time in this zone at instant `utc`.
    pub fn local(&self, utc: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Self::Offset(offset) => utc.with_timezone(offset).naive_local(),
            Self::Named(zone) => utc.with_timezone(zone).naive_local(),
        }
    }

    /// The instant of wall-clock time `local` in this zone; `None` when the time does not
    /// exist or exists twice (daylight-saving transitions).
    pub fn instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let single = |result: LocalResult<DateTime<Utc>>| match result {
            LocalResult::Single(instant) => Some(instant),
            _ => None,
        };
        match self {
            Self::Offset(offset) => single(
                offset
                    .from_local_datetime(&local)
                    .map(|t| t.with_timezone(&Utc)),
            ),
            Self::Named(zone) => single(
                zone.from_local_datetime(&local)
                    .map(|t| t.with_timezone(&Utc)),
            ),
        }
    }
}

/// What to do with a decimal that has more fractional digits than the column's scale
/// (`writer.decimal_overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalOverflow {
    /// Round half away from zero, as MySQL does (default).
    #[default]
    Round,
    /// Refuse the value (a definite error).
    Error,
}

/// How an array is written to a text column (`writer.array_text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArrayText {
    /// Elements joined with `,`, no brackets and no quoting: `["1","2"]` → `1,2` (as the
    /// reference writes). A NULL element becomes an empty element.
    #[default]
    CommaJoined,
    /// JSON text: `["1","2"]`.
    Json,
}

/// The configurable parts of the conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConversionRules {
    /// Decimals with too many fractional digits.
    pub decimal_overflow: DecimalOverflow,
    /// Arrays into text columns.
    pub array_text: ArrayText,
}

impl From<&revrepl_config::WriterConfig> for ConversionRules {
    fn from(config: &revrepl_config::WriterConfig) -> Self {
        Self {
            decimal_overflow: match config.decimal_overflow {
                revrepl_config::DecimalOverflow::Round => DecimalOverflow::Round,
                revrepl_config::DecimalOverflow::Error => DecimalOverflow::Error,
            },
            array_text: match config.array_text {
                revrepl_config::ArrayText::CommaJoined => ArrayText::CommaJoined,
                revrepl_config::ArrayText::Json => ArrayText::Json,
            },
        }
    }
}

/// A converted value.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The value to bind.
    pub value: Value,
    /// Whether a decimal was rounded to the column's scale ([`DecimalOverflow::Round`]).
    pub rounded: bool,
}

/// A value that cannot be written to its column. Says what kind of value it was and why, never
/// the value itself; the caller adds shard, table, column and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError {
    /// The value's type: the Spanner type when known (`INT64`, `ARRAY<STRING>`), else its JSON
    /// kind (`JSON string`).
    pub value_type: String,
    /// Why it does not fit.
    pub reason: String,
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} value {}", self.value_type, self.reason)
    }
}

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Converts one change-stream value for `column` with the default [`ConversionRules`].
/// `spanner_type` is the Spanner column's type when the schema mapping knows it; `zone` is the
/// source time zone for `datetime` columns.
pub fn to_mysql_value(
    value: &Json,
    column: &TargetColumn,
    spanner_type: Option<&SpannerType>,
    zone: &SourceTimeZone,
) -> Result<Value, ConversionError> {
    convert(
        value,
        column,
        spanner_type,
        zone,
        &ConversionRules::default(),
    )
    .map(|converted| converted.value)
}

/// Converts one change-stream value for `column` by `rules` (see [`to_mysql_value`]), saying
/// whether it was rounded.
pub fn convert(
    value: &Json,
    column: &TargetColumn,
    spanner_type: Option<&SpannerType>,
    zone: &SourceTimeZone,
    rules: &ConversionRules,
) -> Result<Converted, ConversionError> {
    let fail = |reason: String| ConversionError {
        value_type: value_type(value, spanner_type),
        reason,
    };
    if let ColumnKind::Decimal {
        precision,
        scale,
        unsigned,
    } = &column.kind
        && !value.is_null()
    {
        let (value, rounded) =
            decimal(value, *precision, *scale, *unsigned, rules.decimal_overflow).map_err(fail)?;
        return Ok(Converted { value, rounded });
    }
    if let (ColumnKind::Text, Json::Array(items), ArrayText::CommaJoined) =
        (&column.kind, value, rules.array_text)
    {
        let bytes = comma_joined(items).into_bytes();
        check_length(&bytes, column, true).map_err(fail)?;
        return Ok(Converted {
            value: Value::Bytes(bytes),
            rounded: false,
        });
    }
    plain_value(value, column, spanner_type, zone).map(|value| Converted {
        value,
        rounded: false,
    })
}

/// An array's elements as text joined with `,`: strings as they are, other scalars printed,
/// arrays and objects as JSON text, NULL as nothing.
pub fn comma_joined(items: &[Json]) -> String {
    items
        .iter()
        .map(|item| match item {
            Json::Null => String::new(),
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn plain_value(
    value: &Json,
    column: &TargetColumn,
    spanner_type: Option<&SpannerType>,
    zone: &SourceTimeZone,
) -> Result<Value, ConversionError> {
    let fail = |reason: String| ConversionError {
        value_type: value_type(value, spanner_type),
        reason,
    };
    if value.is_null() {
        return if column.nullable {
            Ok(Value::NULL)
        } else {
            Err(fail("is NULL, but the column is NOT NULL".into()))
        };
    }
    let is_bytes = spanner_type.is_some_and(|t| t.scalar == SpannerScalar::Bytes && !t.is_array);
    let is_string = spanner_type.is_some_and(|t| t.scalar == SpannerScalar::String && !t.is_array);
    match &column.kind {
        ColumnKind::Integer { bits, unsigned } => integer(value, *bits, *unsigned).map_err(fail),
        ColumnKind::Decimal {
            precision,
            scale,
            unsigned,
        } => decimal(value, *precision, *scale, *unsigned, DecimalOverflow::Error)
            .map(|(value, _)| value)
            .map_err(fail),
        ColumnKind::Float { double, unsigned } => float(value, *double, *unsigned).map_err(fail),
        ColumnKind::Bit { width } => bit(value, *width, is_bytes).map_err(fail),
        ColumnKind::Text => {
            let bytes = match value {
                Json::String(s) if is_bytes => decode_base64(s).map_err(fail)?,
                _ => text_bytes(value),
            };
            check_length(&bytes, column, !is_bytes).map_err(fail)?;
            Ok(Value::Bytes(bytes))
        }
        ColumnKind::Json => {
            let text = match value {
                Json::String(s) => {
                    serde_json::from_str::<Json>(s)
                        .map_err(|_| fail("is not valid JSON text".into()))?;
                    s.clone()
                }
                other => other.to_string(),
            };
            Ok(Value::Bytes(text.into_bytes()))
        }
        ColumnKind::Binary => {
            let bytes = match value {
                Json::String(s) if is_string => s.as_bytes().to_vec(),
                Json::String(s) => decode_base64(s).map_err(fail)?,
                other => text_bytes(other),
            };
            check_length(&bytes, column, false).map_err(fail)?;
            Ok(Value::Bytes(bytes))
        }
        ColumnKind::Enum { members } => {
            let text = scalar_text(value)
                .ok_or_else(|| fail("cannot be written to an ENUM column".into()))?;
            if !is_member(members, &text) {
                return Err(fail("is not a member of the ENUM".into()));
            }
            Ok(Value::Bytes(text.into_bytes()))
        }
        ColumnKind::Set { members } => set(value, members).map_err(fail),
        ColumnKind::Date => date(value, zone).map_err(fail),
        ColumnKind::DateTime { fsp } => date_time(value, *fsp, zone, false).map_err(fail),
        ColumnKind::Timestamp { fsp } => date_time(value, *fsp, zone, true).map_err(fail),
        ColumnKind::Time { fsp } => time(value, *fsp).map_err(fail),
        ColumnKind::Year => year(value).map_err(fail),
        ColumnKind::Unsupported => Err(fail(format!(
            "cannot be written: column type {} is not supported by the writer",
            column.column_type
        ))),
    }
}

/// The type of a value for error messages.
fn value_type(value: &Json, spanner_type: Option<&SpannerType>) -> String {
    if let Some(spanner_type) = spanner_type {
        return spanner_type.to_string();
    }
    let kind = match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    };
    format!("JSON {kind}")
}

/// A scalar's text (strings as they are, numbers and booleans printed), or `None` for arrays,
/// objects and null.
fn scalar_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The bytes a value becomes in a text or binary column: strings as they are, arrays and
/// objects as JSON text, numbers and booleans printed.
fn text_bytes(value: &Json) -> Vec<u8> {
    match value {
        Json::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(text)
        .map_err(|_| "is not valid base64 (BYTES values are base64 in change records)".into())
}

fn check_length(bytes: &[u8], column: &TargetColumn, count_chars: bool) -> Result<(), String> {
    if let Some(max) = column.max_bytes
        && bytes.len() as u64 > max
    {
        return Err(format!(
            "is {} bytes long, more than the column's {max}",
            bytes.len()
        ));
    }
    if let Some(max) = column.max_chars {
        // A text has at most as many characters as bytes: count only when it may matter.
        let length = if count_chars && bytes.len() as u64 > max {
            match std::str::from_utf8(bytes) {
                Ok(text) => text.chars().count(),
                Err(_) => String::from_utf8_lossy(bytes).chars().count(),
            }
        } else {
            bytes.len()
        };
        if length as u64 > max {
            let unit = if count_chars { "characters" } else { "bytes" };
            return Err(format!(
                "is {length} {unit} long, more than the column's {max}"
            ));
        }
    }
    Ok(())
}

/// A decimal text split into sign and digits, with leading zeros of the integer part and
/// trailing zeros of the fraction removed.
struct DecimalText {
    negative: bool,
    integer: String,
    fraction: String,
}

fn parse_decimal(text: &str) -> Option<DecimalText> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (integer, fraction) = body.split_once('.').unwrap_or((body, ""));
    if (integer.is_empty() && fraction.is_empty())
        || !integer.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let integer = integer.trim_start_matches('0').to_string();
    let fraction = fraction.trim_end_matches('0').to_string();
    let negative = negative && !(integer.is_empty() && fraction.is_empty());
    Some(DecimalText {
        negative,
        integer,
        fraction,
    })
}

/// Text of a number or numeric string, for integer and decimal columns.
fn numeric_text(value: &Json) -> Result<String, String> {
    match value {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(if *b { "1" } else { "0" }.to_string()),
        _ => Err("cannot be written to a numeric column".into()),
    }
}

fn integer(value: &Json, bits: u8, unsigned: bool) -> Result<Value, String> {
    let text = numeric_text(value)?;
    let parsed = parse_decimal(&text).ok_or("is not an integer")?;
    if !parsed.fraction.is_empty() {
        return Err("has a fractional part, but the column holds integers".into());
    }
    let (min, max): (i128, i128) = if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    };
    let out_of_range = || format!("is outside the column's range {min}..={max}");
    if parsed.integer.len() > 20 {
        return Err(out_of_range());
    }
    let magnitude: i128 = if parsed.integer.is_empty() {
        0
    } else {
        parsed.integer.parse().map_err(|_| out_of_range())?
    };
    let number = if parsed.negative {
        -magnitude
    } else {
        magnitude
    };
    if !(min..=max).contains(&number) {
        return Err(out_of_range());
    }
    if unsigned {
        u64::try_from(number)
            .map(Value::UInt)
            .map_err(|_| out_of_range())
    } else {
        i64::try_from(number)
            .map(Value::Int)
            .map_err(|_| out_of_range())
    }
}

/// A decimal for a `DECIMAL(precision, scale)` column, and whether it was rounded.
fn decimal(
    value: &Json,
    precision: u32,
    scale: u32,
    unsigned: bool,
    overflow: DecimalOverflow,
) -> Result<(Value, bool), String> {
    let text = numeric_text(value)?;
    if matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity") {
        return Err("is NaN or infinite, which a DECIMAL column cannot hold".into());
    }
    let mut parsed = parse_decimal(&text).ok_or("is not a decimal number")?;
    let mut rounded = false;
    if parsed.fraction.len() as u64 > u64::from(scale) {
        if overflow == DecimalOverflow::Error {
            return Err(format!(
                "has more fractional digits than the column's scale {scale} \
                 (writer.decimal_overflow = \"error\")"
            ));
        }
        round_half_away_from_zero(&mut parsed, scale as usize);
        rounded = true;
    }
    let integer_digits = u64::from(precision.saturating_sub(scale));
    if parsed.integer.len() as u64 > integer_digits {
        return Err(format!(
            "has more integer digits than the column's {integer_digits}"
        ));
    }
    if unsigned && parsed.negative {
        return Err("is negative, but the column is UNSIGNED".into());
    }
    let mut normalized = String::with_capacity(parsed.integer.len() + parsed.fraction.len() + 3);
    if parsed.negative {
        normalized.push('-');
    }
    normalized.push_str(if parsed.integer.is_empty() {
        "0"
    } else {
        &parsed.integer
    });
    if !parsed.fraction.is_empty() {
        normalized.push('.');
        normalized.push_str(&parsed.fraction);
    }
    Ok((Value::Bytes(normalized.into_bytes()), rounded))
}

/// Rounds `parsed` to `scale` fractional digits, half away from zero, exactly (on the digits),
/// as MySQL rounds a decimal stored into a column of smaller scale.
fn round_half_away_from_zero(parsed: &mut DecimalText, scale: usize) {
    if parsed.fraction.len() <= scale {
        return;
    }
    let up = parsed.fraction.as_bytes()[scale] >= b'5';
    parsed.fraction.truncate(scale);
    if up {
        // Add one unit of the last kept digit to integer and fraction read as one number.
        let mut digits: Vec<u8> = parsed
            .integer
            .bytes()
            .chain(parsed.fraction.bytes())
            .collect();
        let mut carry = true;
        for digit in digits.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            digits.insert(0, b'1');
        }
        let split = digits.len() - scale;
        // Only ASCII digits were pushed, so both halves are valid UTF-8.
        parsed.integer = String::from_utf8_lossy(&digits[..split])
            .trim_start_matches('0')
            .to_string();
        parsed.fraction = String::from_utf8_lossy(&digits[split..]).into_owned();
    }
    parsed.fraction = parsed.fraction.trim_end_matches('0').to_string();
    if parsed.integer.is_empty() && parsed.fraction.is_empty() {
        parsed.negative = false;
    }
}

fn float(value: &Json, double: bool, unsigned: bool) -> Result<Value, String> {
    let number = match value {
        Json::Number(n) => n.as_f64().ok_or("is not a number")?,
        Json::Bool(b) => f64::from(u8::from(*b)),
        Json::String(s) => {
            if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") {
                return Err("is NaN or infinite, which MySQL cannot store".into());
            }
            s.parse::<f64>().map_err(|_| "is not a number")?
        }
        _ => return Err("cannot be written to a floating-point column".into()),
    };
    if !number.is_finite() {
        return Err("is NaN or infinite, which MySQL cannot store".into());
    }
    if !double && number.abs() > f64::from(f32::MAX) {
        return Err("is outside the range of a FLOAT column".into());
    }
    if unsigned && number < 0.0 {
        return Err("is negative, but the column is UNSIGNED".into());
    }
    Ok(Value::Double(number))
}

fn bit(value: &Json, width: u32, is_bytes: bool) -> Result<Value, String> {
    let limit = |n: u64| width >= 64 || n < (1u64 << width);
    let too_wide = || format!("does not fit in BIT({width})");
    let number = match value {
        Json::Bool(b) => u64::from(*b),
        Json::Number(n) => n.as_u64().ok_or("is not a non-negative integer")?,
        Json::String(s) => {
            let as_integer = (!is_bytes)
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
            match as_integer {
                Some(n) => n,
                None => {
                    let bytes = decode_base64(s)?;
                    if bytes.len() > 8 {
                        return Err(too_wide());
                    }
                    bytes
                        .iter()
                        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
                }
            }
        }
        _ => return Err("cannot be written to a BIT column".into()),
    };
    if !limit(number) {
        return Err(too_wide());
    }
    Ok(Value::UInt(number))
}

fn is_member(members: &[String], text: &str) -> bool {
    let lower = text.to_lowercase();
    members
        .iter()
        .any(|m| m == text || m.to_lowercase() == lower)
}

fn set(value: &Json, members: &[String]) -> Result<Value, String> {
    let elements: Vec<String> = match value {
        Json::String(s) if s.is_empty() => Vec::new(),
        Json::String(s) => s.split(',').map(str::to_string).collect(),
        Json::Array(items) => items
            .iter()
            .map(|item| match scalar_text(item) {
                Some(text) if !text.contains(',') => Ok(text),
                Some(_) => Err("has an element with a comma, which a SET cannot hold"),
                None => Err("has an element that is not a string"),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("cannot be written to a SET column".into()),
    };
    if elements.iter().any(|element| !is_member(members, element)) {
        return Err("has an element that is not a member of the SET".into());
    }
    Ok(Value::Bytes(elements.join(",").into_bytes()))
}

/// A point in time read from a value: an instant (RFC 3339 with offset) or a wall-clock time
/// without zone (`YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.f]`).
enum TimePoint {
    Instant(DateTime<Utc>),
    Local(NaiveDateTime),
}

fn time_point(value: &Json) -> Result<TimePoint, String> {
    let Json::String(text) = value else {
        return Err("cannot be written to a date or time column".into());
    };
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(TimePoint::Instant(instant.with_timezone(&Utc)));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(TimePoint::Local(date.and_time(chrono::NaiveTime::MIN)));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(TimePoint::Local(local));
        }
    }
    Err("is not a DATE, TIMESTAMP or date-time text".into())
}

/// Rounds the fractional seconds of `time` to `fsp` digits, half up (as MySQL rounds).
fn round_fraction(time: NaiveDateTime, fsp: u8) -> Option<NaiveDateTime> {
    let unit = 10u32.pow(9 - u32::from(fsp.min(9)));
    let nanos = time.nanosecond() % 1_000_000_000;
    let rest = nanos % unit;
    if rest == 0 {
        return Some(time);
    }
    if rest * 2 >= unit {
        time.checked_add_signed(chrono::Duration::nanoseconds(i64::from(unit - rest)))
    } else {
        time.checked_sub_signed(chrono::Duration::nanoseconds(i64::from(rest)))
    }
}

fn date_value(time: NaiveDateTime) -> Result<Value, String> {
    let year = u16::try_from(time.year())
        .ok()
        .filter(|y| *y <= 9999)
        .ok_or("is outside the years 0000 to 9999 MySQL can hold")?;
    // Month, day, hour, minute and second fit in u8 by construction.
    Ok(Value::Date(
        year,
        time.month() as u8,
        time.day() as u8,
        time.hour() as u8,
        time.minute() as u8,
        time.second() as u8,
        (time.nanosecond() % 1_000_000_000) / 1_000,
    ))
}

fn date(value: &Json, zone: &SourceTimeZone) -> Result<Value, String> {
    let local = match time_point(value)? {
        TimePoint::Local(local) => local,
        TimePoint::Instant(instant) => zone.local(instant),
    };
    if local.time() != chrono::NaiveTime::MIN {
        return Err("has a time of day, but the column holds only dates".into());
    }
    date_value(local)
}

/// The instants a MySQL `timestamp` can hold.
fn timestamp_range() -> (NaiveDateTime, NaiveDateTime) {
    let min = DateTime::from_timestamp(1, 0)
        .unwrap_or_default()
        .naive_utc();
    let max = DateTime::from_timestamp(2_147_483_647, 999_999_000)
        .unwrap_or_default()
        .naive_utc();
    (min, max)
}

fn date_time(
    value: &Json,
    fsp: u8,
    zone: &SourceTimeZone,
    timestamp_column: bool,
) -> Result<Value, String> {
    let point = time_point(value)?;
    let wall_clock = if timestamp_column {
        // The session's time zone is UTC: bind the instant's UTC wall-clock time.
        match point {
            TimePoint::Instant(instant) => instant.naive_utc(),
            TimePoint::Local(local) => zone
                .instant(local)
                .ok_or(
                    "is a local time that does not exist or is ambiguous in the source time zone",
                )?
                .naive_utc(),
        }
    } else {
        match point {
            TimePoint::Instant(instant) => zone.local(instant),
            TimePoint::Local(local) => local,
        }
    };
    let rounded = round_fraction(wall_clock, fsp).ok_or("is outside the representable range")?;
    if timestamp_column {
        let (min, max) = timestamp_range();
        if rounded < min || rounded > max {
            return Err(
                "is outside the range of a TIMESTAMP column (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC)"
                    .into(),
            );
        }
    }
    date_value(rounded)
}

fn time(value: &Json, fsp: u8) -> Result<Value, String> {
    let Json::String(text) = value else {
        return Err("cannot be written to a TIME column".into());
    };
    let invalid = || "is not a time of the form [-]HH:MM:SS[.fraction]".to_string();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (clock, fraction) = body.split_once('.').unwrap_or((body, ""));
    let parts: Vec<&str> = clock.split(':').collect();
    let [hours, minutes, seconds] = parts.as_slice() else {
        return Err(invalid());
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours)
        || minutes.len() != 2
        || seconds.len() != 2
        || !digits(minutes)
        || !digits(seconds)
        || !(fraction.is_empty() || digits(fraction))
        || fraction.len() > 9
    {
        return Err(invalid());
    }
    let hours: u64 = hours.parse().map_err(|_| invalid())?;
    let minutes: u64 = minutes.parse().map_err(|_| invalid())?;
    let seconds: u64 = seconds.parse().map_err(|_| invalid())?;
    if minutes > 59 || seconds > 59 {
        return Err(invalid());
    }
    let nanos: u64 = format!("{fraction:0<9}").parse().map_err(|_| invalid())?;
    let unit = 10u64.pow(9 - u32::from(fsp.min(6)));
    let rest = nanos % unit;
    let mut total_nanos = (hours * 3_600 + minutes * 60 + seconds) * 1_000_000_000 + (nanos - rest);
    if rest * 2 >= unit {
        total_nanos += unit;
    }
    let max_nanos = (838 * 3_600 + 59 * 60 + 59) * 1_000_000_000;
    if total_nanos > max_nanos {
        return Err("is outside the range of a TIME column (±838:59:59)".into());
    }
    let micros = (total_nanos % 1_000_000_000) / 1_000;
    let total_seconds = total_nanos / 1_000_000_000;
    // Bounded by max_nanos: days ≤ 34, and the other parts are below 60 or 1e6.
    Ok(Value::Time(
        negative && total_nanos > 0,
        (total_seconds / 86_400) as u32,
        ((total_seconds % 86_400) / 3_600) as u8,
        ((total_seconds % 3_600) / 60) as u8,
        (total_seconds % 60) as u8,
        micros as u32,
    ))
}

fn year(value: &Json) -> Result<Value, String> {
    let text = numeric_text(value)?;
    let parsed = parse_decimal(&text).ok_or("is not a year")?;
    if !parsed.fraction.is_empty() || parsed.negative || parsed.integer.len() > 4 {
        return Err("is not a year between 1901 and 2155 (or 0)".into());
    }
    let number: u64 = if parsed.integer.is_empty() {
        0
    } else {
        parsed.integer.parse().map_err(|_| "is not a year")?
    };
    if number != 0 && !(1901..=2155).contains(&number) {
        return Err("is not a year between 1901 and 2155 (or 0)".into());
    }
    Ok(Value::UInt(number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc() -> SourceTimeZone {
        SourceTimeZone::default()
    }

    fn convert(value: Json, column_type: &str) -> Result<Value, ConversionError> {
        to_mysql_value(&value, &TargetColumn::new("c", column_type), None, &utc())
    }

    fn converted(value: Json, column_type: &str) -> Value {
        convert(value, column_type).expect("value converts")
    }

    fn reason(value: Json, column_type: &str) -> String {
        convert(value, column_type)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn integers_of_every_width() {
        assert_eq!(converted(json!("127"), "tinyint"), Value::Int(127));
        assert!(reason(json!("128"), "tinyint").contains("range -128..=127"));
        assert_eq!(
            converted(json!("255"), "tinyint unsigned"),
            Value::UInt(255)
        );
        assert!(reason(json!("-1"), "int unsigned").contains("outside"));
        assert_eq!(
            converted(json!("18446744073709551615"), "bigint unsigned"),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            converted(json!("-9223372036854775808"), "bigint"),
            Value::Int(i64::MIN)
        );
        assert!(reason(json!("9223372036854775808"), "bigint").contains("outside"));
        assert!(reason(json!("99999999999999999999999"), "bigint").contains("outside"));
        assert_eq!(
            converted(json!("8388607"), "mediumint"),
            Value::Int(8_388_607)
        );
        assert!(reason(json!("8388608"), "mediumint").contains("outside"));
        assert_eq!(converted(json!(true), "tinyint(1)"), Value::Int(1));
        assert_eq!(converted(json!(42), "smallint"), Value::Int(42));
        assert_eq!(converted(json!("12.000"), "int"), Value::Int(12));
        assert!(reason(json!("1.5"), "int").contains("fractional"));
        assert!(reason(json!("abc"), "int").contains("not an integer"));
        assert!(reason(json!(["1"]), "int").contains("JSON array"));
    }

    fn with_rules(value: Json, column_type: &str, rules: ConversionRules) -> Converted {
        super::convert(
            &value,
            &TargetColumn::new("c", column_type),
            None,
            &utc(),
            &rules,
        )
        .expect("value converts")
    }

    /// Issue 12.4: MySQL rounds a decimal with too many fractional digits half away from zero
    /// (a note, even in strict mode), and the reference's all-types record relies on it.
    #[test]
    fn decimals_with_too_many_fractional_digits_round_as_mysql_does() {
        let rounds = |text: &str, column: &str| {
            let converted = with_rules(json!(text), column, ConversionRules::default());
            assert!(
                converted.rounded,
                "{text} into {column} is reported as rounded"
            );
            match converted.value {
                Value::Bytes(bytes) => String::from_utf8(bytes).expect("ASCII"),
                other => panic!("a decimal is bound as text, got {other:?}"),
            }
        };
        assert_eq!(rounds("444.222", "decimal(10,2)"), "444.22");
        assert_eq!(rounds("444.225", "decimal(10,2)"), "444.23");
        assert_eq!(rounds("-444.225", "decimal(10,2)"), "-444.23");
        assert_eq!(rounds("-444.224999", "decimal(10,2)"), "-444.22");
        assert_eq!(rounds("0.995", "decimal(10,2)"), "1");
        assert_eq!(rounds("99.995", "decimal(10,2)"), "100");
        assert_eq!(rounds("-0.004", "decimal(10,2)"), "0");
        assert_eq!(rounds("1.5", "decimal(10,0)"), "2");
        assert_eq!(rounds("-2.5", "decimal(10,0)"), "-3");
        assert_eq!(rounds("0.00000000051", "decimal(38,9)"), "0.000000001");
        // Rounding that carries into a digit the column does not have is an overflow.
        let r = reason(json!("99999999.995"), "decimal(10,2)");
        assert!(r.contains("integer digits"), "{r}");
        // Exact values are not "rounded".
        let exact = with_rules(json!("1.50"), "decimal(10,2)", ConversionRules::default());
        assert!(!exact.rounded);

        let strict = ConversionRules {
            decimal_overflow: DecimalOverflow::Error,
            ..ConversionRules::default()
        };
        let error = super::convert(
            &json!("1.234"),
            &TargetColumn::new("c", "decimal(10,2)"),
            None,
            &utc(),
            &strict,
        )
        .expect_err("refused with decimal_overflow = error");
        assert!(error.to_string().contains("scale 2"), "{error}");
    }

    /// Issue 12.5: arrays into text columns as the reference writes them, JSON on request.
    #[test]
    fn arrays_into_text_are_comma_joined_or_json() {
        let joined = with_rules(json!(["1", "2"]), "varchar(20)", ConversionRules::default());
        assert_eq!(joined.value, Value::Bytes(b"1,2".to_vec()));
        let mixed = with_rules(
            json!([1, null, true, "x y"]),
            "text",
            ConversionRules::default(),
        );
        assert_eq!(mixed.value, Value::Bytes(b"1,,true,x y".to_vec()));
        let as_json = ConversionRules {
            array_text: ArrayText::Json,
            ..ConversionRules::default()
        };
        let json_text = with_rules(json!(["1", "2"]), "varchar(20)", as_json);
        assert_eq!(json_text.value, Value::Bytes(br#"["1","2"]"#.to_vec()));
        // JSON columns keep JSON whatever the rule.
        let json_column = with_rules(json!(["1", "2"]), "json", ConversionRules::default());
        assert_eq!(json_column.value, Value::Bytes(br#"["1","2"]"#.to_vec()));
        // The joined text is checked against the column's length.
        assert!(
            super::convert(
                &json!(["abc", "def"]),
                &TargetColumn::new("c", "varchar(5)"),
                None,
                &utc(),
                &ConversionRules::default(),
            )
            .is_err()
        );
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(
            converted(
                json!("12345678901234567890123456789.123456789"),
                "decimal(38,9)"
            ),
            Value::Bytes(b"12345678901234567890123456789.123456789".to_vec())
        );
        assert_eq!(
            converted(json!("-0001.500000000"), "decimal(10,2)"),
            Value::Bytes(b"-1.5".to_vec())
        );
        assert_eq!(
            converted(json!("-0.000"), "decimal(10,2)"),
            Value::Bytes(b"0".to_vec())
        );
        assert!(reason(json!("123456789"), "decimal(10,2)").contains("integer digits"));
        assert!(reason(json!("NaN"), "decimal(10,2)").contains("NaN"));
        assert!(reason(json!("-1"), "decimal(10,2) unsigned").contains("UNSIGNED"));
        assert_eq!(
            converted(json!(0.1), "decimal(10,2)"),
            Value::Bytes(b"0.1".to_vec())
        );
    }

    #[test]
    fn floats_reject_nan_and_infinity() {
        assert_eq!(converted(json!(1.5), "double"), Value::Double(1.5));
        assert_eq!(converted(json!("2.25"), "float"), Value::Double(2.25));
        for special in ["NaN", "Infinity", "-Infinity", "inf"] {
            let r = reason(json!(special), "double");
            assert!(r.contains("NaN") || r.contains("not a number"), "{r}");
        }
        assert!(reason(json!(1e300), "float").contains("FLOAT"));
    }

    #[test]
    fn bits_from_integers_booleans_and_bytes() {
        assert_eq!(converted(json!("5"), "bit(3)"), Value::UInt(5));
        assert!(reason(json!("8"), "bit(3)").contains("BIT(3)"));
        assert_eq!(converted(json!(true), "bit(1)"), Value::UInt(1));
        let bytes = SpannerType::scalar(SpannerScalar::Bytes);
        let column = TargetColumn::new("c", "bit(16)");
        assert_eq!(
            to_mysql_value(&json!("AQI="), &column, Some(&bytes), &utc()),
            Ok(Value::UInt(0x0102))
        );
        assert_eq!(
            converted(json!("18446744073709551615"), "bit(64)"),
            Value::UInt(u64::MAX)
        );
    }

    #[test]
    fn strings_keep_every_byte_and_respect_lengths() {
        let tricky = "it's a \\ \"quote\" \0 NUL and 🦀 emoji";
        assert_eq!(
            converted(json!(tricky), "text"),
            Value::Bytes(tricky.as_bytes().to_vec())
        );
        assert_eq!(converted(json!(""), "varchar(5)"), Value::Bytes(Vec::new()));
        assert_eq!(
            converted(json!("🦀🦀🦀🦀🦀"), "varchar(5)"),
            Value::Bytes("🦀🦀🦀🦀🦀".as_bytes().to_vec())
        );
        let r = reason(json!("🦀🦀🦀🦀🦀🦀"), "varchar(5)");
        assert!(r.contains("6 characters") && !r.contains('🦀'), "{r}");
        assert_eq!(
            converted(json!(["a", "b"]), "varchar(50)"),
            Value::Bytes(b"a,b".to_vec()),
            "arrays become the reference's comma-joined text by default"
        );
        assert_eq!(
            converted(json!(12), "char(2)"),
            Value::Bytes(b"12".to_vec())
        );
    }

    #[test]
    fn bytes_decode_from_base64() {
        assert_eq!(
            converted(json!("AP8A"), "varbinary(3)"),
            Value::Bytes(vec![0, 255, 0])
        );
        assert!(reason(json!("AP8AAP8A"), "varbinary(3)").contains("6 bytes"));
        assert!(reason(json!("not base64!"), "blob").contains("base64"));
        let string = SpannerType::scalar(SpannerScalar::String);
        let column = TargetColumn::new("c", "varbinary(10)");
        assert_eq!(
            to_mysql_value(&json!("AP8A"), &column, Some(&string), &utc()),
            Ok(Value::Bytes(b"AP8A".to_vec()))
        );
        let bytes = SpannerType::scalar(SpannerScalar::Bytes);
        let text = TargetColumn::new("c", "text");
        assert_eq!(
            to_mysql_value(&json!("aGk="), &text, Some(&bytes), &utc()),
            Ok(Value::Bytes(b"hi".to_vec()))
        );
    }

    #[test]
    fn enums_and_sets_check_members() {
        assert_eq!(
            converted(json!("b"), "enum('a','b')"),
            Value::Bytes(b"b".to_vec())
        );
        assert!(reason(json!("c"), "enum('a','b')").contains("member"));
        assert_eq!(
            converted(json!(["r", "w"]), "set('r','w','x')"),
            Value::Bytes(b"r,w".to_vec())
        );
        assert_eq!(
            converted(json!("r,x"), "set('r','w','x')"),
            Value::Bytes(b"r,x".to_vec())
        );
        assert_eq!(
            converted(json!([]), "set('r','w','x')"),
            Value::Bytes(Vec::new())
        );
        assert!(reason(json!(["q"]), "set('r','w')").contains("member"));
    }

    #[test]
    fn timestamps_follow_the_source_time_zone() {
        let new_york: SourceTimeZone = "America/New_York".parse().expect("zone");
        let column = TargetColumn::new("c", "datetime(6)");
        let at = |text: &str| to_mysql_value(&json!(text), &column, None, &new_york);
        // Before the 2024-03-10 spring-forward: EST (-05:00).
        assert_eq!(
            at("2024-03-10T06:59:59.123456Z"),
            Ok(Value::Date(2024, 3, 10, 1, 59, 59, 123_456))
        );
        // After: EDT (-04:00); 02:xx does not exist locally.
        assert_eq!(
            at("2024-03-10T07:00:00.000001Z"),
            Ok(Value::Date(2024, 3, 10, 3, 0, 0, 1))
        );
        let offset: SourceTimeZone = "+05:30".parse().expect("offset");
        assert_eq!(
            to_mysql_value(
                &json!("2024-01-01T00:00:00Z"),
                &TargetColumn::new("c", "datetime"),
                None,
                &offset
            ),
            Ok(Value::Date(2024, 1, 1, 5, 30, 0, 0))
        );
    }

    #[test]
    fn fractions_round_half_up_to_the_column_precision() {
        assert_eq!(
            converted(json!("2024-01-01T23:59:59.999999500Z"), "datetime(6)"),
            Value::Date(2024, 1, 2, 0, 0, 0, 0)
        );
        assert_eq!(
            converted(json!("2024-01-01T10:00:00.123456789Z"), "datetime(3)"),
            Value::Date(2024, 1, 1, 10, 0, 0, 123_000)
        );
        assert_eq!(
            converted(json!("2024-01-01T10:00:00.5Z"), "datetime"),
            Value::Date(2024, 1, 1, 10, 0, 1, 0)
        );
    }

    #[test]
    fn timestamp_columns_get_the_instant_in_utc() {
        let new_york: SourceTimeZone = "America/New_York".parse().expect("zone");
        let column = TargetColumn::new("c", "timestamp(6)");
        assert_eq!(
            to_mysql_value(&json!("2024-11-03T05:30:00Z"), &column, None, &new_york),
            Ok(Value::Date(2024, 11, 3, 5, 30, 0, 0))
        );
        assert!(reason(json!("2040-01-01T00:00:00Z"), "timestamp").contains("TIMESTAMP"));
        assert!(reason(json!("1969-12-31T00:00:00Z"), "timestamp").contains("TIMESTAMP"));
    }

    #[test]
    fn dates_times_and_years() {
        assert_eq!(
            converted(json!("2024-02-29"), "date"),
            Value::Date(2024, 2, 29, 0, 0, 0, 0)
        );
        assert!(reason(json!("2024-02-29T10:00:00Z"), "date").contains("time of day"));
        assert!(reason(json!("yesterday"), "date").contains("not a DATE"));
        assert_eq!(
            converted(json!("-838:59:59"), "time"),
            Value::Time(true, 34, 22, 59, 59, 0)
        );
        assert_eq!(
            converted(json!("12:34:56.1234567"), "time(6)"),
            Value::Time(false, 0, 12, 34, 56, 123_457)
        );
        assert!(reason(json!("839:00:00"), "time").contains("TIME"));
        assert_eq!(converted(json!("2024"), "year"), Value::UInt(2024));
        assert!(reason(json!("1800"), "year").contains("1901"));
    }

    #[test]
    fn json_columns_take_text_and_arrays() {
        assert_eq!(
            converted(json!(r#"{"a":[1,2]}"#), "json"),
            Value::Bytes(br#"{"a":[1,2]}"#.to_vec())
        );
        assert_eq!(
            converted(json!(["1", null]), "json"),
            Value::Bytes(br#"["1",null]"#.to_vec())
        );
        assert!(reason(json!("{not json"), "json").contains("JSON"));
    }

    #[test]
    fn nulls_respect_nullability() {
        assert_eq!(converted(Json::Null, "int"), Value::NULL);
        let column = TargetColumn::new("c", "int").not_null();
        let error = to_mysql_value(&Json::Null, &column, None, &utc());
        assert!(error.is_err_and(|e| e.reason.contains("NOT NULL")));
    }

    #[test]
    fn parses_time_zones() {
        assert_eq!(
            "+05:30".parse::<SourceTimeZone>().map(|z| z.to_string()),
            Ok("+05:30".to_string())
        );
        assert_eq!(
            "-0800".parse::<SourceTimeZone>().map(|z| z.to_string()),
            Ok("-08:00".to_string())
        );
        assert_eq!(
            "Europe/Berlin"
                .parse::<SourceTimeZone>()
                .map(|z| z.to_string()),
            Ok("Europe/Berlin".to_string())
        );
        assert_eq!(
            "UTC".parse::<SourceTimeZone>(),
            Ok(SourceTimeZone::default())
        );
        for bad in ["+25:00", "Mars/Base", "+5:30", ""] {
            assert!(bad.parse::<SourceTimeZone>().is_err(), "{bad}");
        }
    }
}

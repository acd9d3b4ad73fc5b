//! Logical shard ids: validated once, then trusted everywhere (DESIGN §4).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Directory of the buffer that receives records of tables unknown to the session file.
pub const SKIP_DIRECTORY: &str = "skip";
/// Directory of the buffer that receives dead-lettered records (DESIGN §6.9).
pub const DEAD_LETTER_DIRECTORY: &str = "dlq";

/// A logical shard id that is safe to use as a directory name in the buffer.
///
/// Non-empty, no `/`, no `..`, no control characters, and not one of the buffer's reserved
/// directory names (`skip`, `dlq`), so that a shard's files can never land outside its own
/// directory or mix with another's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ShardId(String);

/// Why a string is not a valid [`ShardId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardIdError {
    /// The id is the empty string.
    #[error("shard id is empty")]
    Empty,
    /// The id contains `/`, which would make it a nested directory.
    #[error("shard id {0:?} contains '/'")]
    Slash(String),
    /// The id contains `..`, which could escape the buffer directory.
    #[error("shard id {0:?} contains '..'")]
    DotDot(String),
    /// The id contains a control character (shown escaped).
    #[error("shard id {0:?} contains a control character")]
    Control(String),
    /// The id is a directory name the buffer reserves for itself.
    #[error("shard id {0:?} is reserved for the buffer's own directory")]
    Reserved(String),
}

impl ShardId {
    /// Validates `id` as a logical shard id.
    pub fn new(id: impl Into<String>) -> Result<Self, ShardIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ShardIdError::Empty);
        }
        if id.contains('/') {
            return Err(ShardIdError::Slash(id));
        }
        if id.contains("..") {
            return Err(ShardIdError::DotDot(id));
        }
        if id.chars().any(char::is_control) {
            return Err(ShardIdError::Control(id));
        }
        if id == SKIP_DIRECTORY || id == DEAD_LETTER_DIRECTORY {
            return Err(ShardIdError::Reserved(id));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ShardId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ShardId {
    type Err = ShardIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for ShardId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["ls1", "shard-01", "east_2", "ünïcode", "a.b", "skipper"] {
            assert_eq!(ShardId::new(id).map(|s| s.to_string()), Ok(id.to_string()));
        }
    }

    #[test]
    fn rejects_unsafe_ids_with_a_reason() {
        assert_eq!(ShardId::new(""), Err(ShardIdError::Empty));
        assert!(matches!(ShardId::new("a/b"), Err(ShardIdError::Slash(_))));
        assert!(matches!(ShardId::new(".."), Err(ShardIdError::DotDot(_))));
        assert!(matches!(ShardId::new("a..b"), Err(ShardIdError::DotDot(_))));
        assert!(matches!(
            ShardId::new("a\nb"),
            Err(ShardIdError::Control(_))
        ));
        assert!(matches!(
            ShardId::new("a\u{7f}"),
            Err(ShardIdError::Control(_))
        ));
        assert!(matches!(
            ShardId::new("skip"),
            Err(ShardIdError::Reserved(_))
        ));
        assert!(matches!(
            ShardId::new("dlq"),
            Err(ShardIdError::Reserved(_))
        ));
        let message = ShardId::new("a\tb").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some(r#"shard id "a\tb" contains a control character"#)
        );
    }

    #[test]
    fn deserializing_validates() {
        let ok: Result<ShardId, _> = serde_json::from_str(r#""ls1""#);
        assert!(ok.is_ok());
        let bad: Result<ShardId, _> = serde_json::from_str(r#""a/b""#);
        assert!(bad.is_err_and(|e| e.to_string().contains("contains '/'")));
    }
}

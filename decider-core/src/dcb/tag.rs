//! Tags: what a DCB query selects events by, beside their type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::stream::StreamId;

/// The longest tag, in bytes. Tags are index keys: short ones keep the index small.
pub const MAX_TAG_BYTES: usize = 512;

/// A label on an event that [`Query`](crate::dcb::Query) items select by: by convention
/// `key:value`, such as `course:c1` or `student:s7`.
///
/// A tag is 1 to [`MAX_TAG_BYTES`] bytes of text without control characters (so every store
/// can index it and an operator can print it).
///
/// ```
/// # use decider_core::dcb::Tag;
/// let course = Tag::new("course:c1")?;
/// assert_eq!(course.as_str(), "course:c1");
/// assert!(Tag::new("").is_err() && Tag::new("a\0b").is_err());
/// # Ok::<(), decider_core::dcb::InvalidTag>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Tag(String);

/// Why a text is not a [`Tag`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a tag: {reason}")]
pub struct InvalidTag {
    /// The refused text (cut at 80 characters).
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Tag {
    /// The tag `text`, if it is 1 to [`MAX_TAG_BYTES`] bytes without control characters.
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidTag> {
        let text = text.into();
        let reason = if text.is_empty() {
            Some("it is empty")
        } else if text.len() > MAX_TAG_BYTES {
            Some("it is longer than 512 bytes")
        } else if text.chars().any(char::is_control) {
            Some("it holds a control character")
        } else {
            None
        };
        match reason {
            None => Ok(Self(text)),
            Some(reason) => Err(InvalidTag {
                text: text.chars().take(80).collect(),
                reason,
            }),
        }
    }

    /// The tag `key:value`.
    ///
    /// ```
    /// # use decider_core::dcb::Tag;
    /// assert_eq!(Tag::pair("student", "s7")?.as_str(), "student:s7");
    /// # Ok::<(), decider_core::dcb::InvalidTag>(())
    /// ```
    pub fn pair(key: &str, value: impl fmt::Display) -> Result<Self, InvalidTag> {
        Self::new(format!("{key}:{value}"))
    }

    /// The tag `stream:<id>`: tag events with their stream to find a stream's events by query.
    /// (Stores do not add it by themselves: it would make every plain append take part in the
    /// locking of conditional appends; see ADR 11.)
    pub fn stream(stream: &StreamId) -> Self {
        // Always a tag: a stream id is 1 to 255 bytes without control characters.
        Self(format!("stream:{stream}"))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = InvalidTag;

    fn from_str(text: &str) -> Result<Self, InvalidTag> {
        Self::new(text)
    }
}

impl TryFrom<&str> for Tag {
    type Error = InvalidTag;

    fn try_from(text: &str) -> Result<Self, InvalidTag> {
        Self::new(text)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_printable_text() {
        assert!(Tag::new("course:c1").is_ok());
        assert!(Tag::new("ünïcode:✓").is_ok());
        assert!(Tag::new("x".repeat(MAX_TAG_BYTES)).is_ok());
        assert!(Tag::new("x".repeat(MAX_TAG_BYTES + 1)).is_err());
        assert!(Tag::new("").is_err());
        assert!(Tag::new("a\nb").is_err());
        assert!(serde_json::from_str::<Tag>(r#""a\u0000""#).is_err());
        let longest = StreamId::new("x".repeat(crate::MAX_STREAM_ID_BYTES)).unwrap();
        let tag = Tag::stream(&longest);
        assert_eq!(Tag::new(tag.as_str()), Ok(tag));
    }
}

//! Naming streams and what an append expects of one: [`StreamId`] (where the overview is),
//! [`Category`], [`StreamKey`], [`ExpectedVersion`].

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

/// The longest stream id accepted, in bytes of UTF-8.
pub const MAX_STREAM_ID_BYTES: usize = 255;

/// The name of one event stream, validated once at construction.
///
/// A stream id is non-empty, at most [`MAX_STREAM_ID_BYTES`] bytes of UTF-8, and holds no control
/// characters. Everything before the first `-` is its [category](StreamId::category), the unit
/// projections and filters select by. Cloning is cheap (the text is shared).
///
/// A stream id names one stream and is validated once, when it is made. Most streams hold
/// one entity's events and are named `<category>-<id>`: a [`Category`] checked when the program
/// is compiled builds them from a typed id ([`StreamKey`]: a UUID or an integer) without a
/// `Result`. An [`ExpectedVersion`] says what an append expects of its stream.
///
/// ```
/// use decider_core::{Category, ExpectedVersion, StreamId};
/// use uuid::Uuid;
///
/// const ACCOUNTS: Category = Category::new("account");
/// let stream = ACCOUNTS.stream(Uuid::nil());
/// assert_eq!(stream.as_str(), "account-00000000-0000-0000-0000-000000000000");
/// assert_eq!(stream.category(), "account");
/// assert_eq!(StreamId::new("account-42")?.category(), "account");
/// // The first event of a stream is revision 0; appending the second one expects revision 0.
/// let expected = ExpectedVersion::Exact(0);
/// # let _ = expected;
/// # Ok::<(), decider_core::InvalidStreamId>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

/// Why a text is not a valid [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStreamId {
    /// The id was the empty string.
    #[error("stream id is empty")]
    Empty,
    /// The id is longer than [`MAX_STREAM_ID_BYTES`].
    #[error("stream id is {len} bytes long; the limit is {MAX_STREAM_ID_BYTES}")]
    TooLong {
        /// Length of the refused id in bytes.
        len: usize,
    },
    /// The id holds a control character (newline, NUL, escape, …).
    #[error("stream id {id:?} holds a control character at byte {index}")]
    ControlCharacter {
        /// The refused id, escaped for display.
        id: String,
        /// Byte offset of the first control character.
        index: usize,
    },
}

impl StreamId {
    /// Validates `id` and makes it a stream id.
    ///
    /// ```
    /// use decider_core::{StreamId, InvalidStreamId};
    /// assert!(StreamId::new("order-7").is_ok());
    /// assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
    /// assert!(matches!(StreamId::new("a\nb"), Err(InvalidStreamId::ControlCharacter { index: 1, .. })));
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidStreamId> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(InvalidStreamId::Empty);
        }
        if id.len() > MAX_STREAM_ID_BYTES {
            return Err(InvalidStreamId::TooLong { len: id.len() });
        }
        if let Some((index, _)) = id.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidStreamId::ControlCharacter {
                id: id.escape_debug().to_string(),
                index,
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-`, or the whole id when it has none.
    ///
    /// ```
    /// # use decider_core::StreamId;
    /// assert_eq!(StreamId::new("account-42-eur")?.category(), "account");
    /// assert_eq!(StreamId::new("settings")?.category(), "settings");
    /// # Ok::<(), decider_core::InvalidStreamId>(())
    /// ```
    pub fn category(&self) -> &str {
        self.0
            .split_once('-')
            .map_or(&self.0, |(category, _)| category)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

/// What an append expects of its stream; a mismatch is refused with
/// [`StoreError::WrongExpectedVersion`](crate::StoreError::WrongExpectedVersion).
///
/// Revisions are 0-based: the first event of a stream is revision 0, so a stream holding three
/// events is at `Exact(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No expectation: append whatever the stream holds.
    Any,
    /// The stream must not exist (hold no event) yet.
    NoStream,
    /// The stream must exist (hold at least one event).
    StreamExists,
    /// The stream's last event must be this revision.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation that holds for a stream whose last revision is `last` (`None`: no stream).
    pub fn from_last_revision(last: Option<u64>) -> Self {
        last.map_or(Self::NoStream, Self::Exact)
    }

    /// Whether a stream whose last revision is `last` (`None`: no stream) meets this expectation.
    pub fn is_met_by(self, last: Option<u64>) -> bool {
        match (self, last) {
            (Self::Any, _) | (Self::NoStream, None) | (Self::StreamExists, Some(_)) => true,
            (Self::Exact(expected), Some(actual)) => expected == actual,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(revision) => write!(f, "revision {revision}"),
        }
    }
}

/// The longest text of a [`StreamKey`], in bytes: an `i128`'s minimum.
pub const MAX_STREAM_KEY_BYTES: usize = 40;

/// The longest name [`Category::new`] accepts, in bytes: what leaves room in a stream id for the
/// `-` and the longest [`StreamKey`].
pub const MAX_CATEGORY_BYTES: usize = MAX_STREAM_ID_BYTES - 1 - MAX_STREAM_KEY_BYTES;

/// The category of the streams `<category>-<key>`, checked when it is made, so that building a
/// stream id from a [`StreamKey`] cannot fail.
///
/// A category is non-empty, at most [`MAX_CATEGORY_BYTES`] bytes, and holds no `-` (which would
/// make [`StreamId::category`] answer a shorter one) and no control character. Declare it as a
/// `const` and a bad name is a compile error:
///
/// ```compile_fail,E0080
/// # use decider_core::Category;
/// const BAD: Category = Category::new("bank-account"); // a `-` in a category
/// # let _ = BAD;
/// ```
///
/// ```
/// use decider_core::{Category, StreamId};
///
/// const ORDERS: Category = Category::new("order");
/// let stream = ORDERS.stream(42_u64);
/// assert_eq!(stream, StreamId::new("order-42")?);
/// assert_eq!(ORDERS.key_of(&stream), Some("42"));
/// assert_eq!(ORDERS.key_of(&StreamId::new("invoice-42")?), None);
/// # Ok::<(), decider_core::InvalidStreamId>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(&'static str);

impl Category {
    /// Checks `name` and makes it a category.
    ///
    /// # Panics
    /// If `name` is empty, longer than [`MAX_CATEGORY_BYTES`], or holds a `-` or a control
    /// character. In a `const` that is an error at compile time.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "a category is not empty");
        assert!(
            bytes.len() <= MAX_CATEGORY_BYTES,
            "a category is at most MAX_CATEGORY_BYTES long"
        );
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            assert!(byte != b'-', "a category holds no `-`");
            // C0 controls and DEL are single bytes; C1 controls (U+0080..=U+009F) are encoded as
            // 0xC2 0x80..=0x9F, and 0xC2 never ends valid UTF-8.
            let c1 = byte == 0xC2 && bytes[index + 1] >= 0x80 && bytes[index + 1] <= 0x9F;
            assert!(
                byte >= 0x20 && byte != 0x7F && !c1,
                "a category holds no control character"
            );
            index += 1;
        }
        Self(name)
    }

    /// The category's name.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }

    /// The stream `<category>-<key>`: always a valid stream id, since the category is checked
    /// and a key's text is short and free of control characters.
    pub fn stream(&self, key: impl StreamKey) -> StreamId {
        StreamId(Arc::from(format!("{}-{key}", self.0)))
    }

    /// The key part of `stream` if it is a stream of this category (`<category>-<key>`).
    pub fn key_of<'a>(&self, stream: &'a StreamId) -> Option<&'a str> {
        stream.as_str().strip_prefix(self.0)?.strip_prefix('-')
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A typed id whose text always fits in a stream id after a [`Category`]: at most
/// [`MAX_STREAM_KEY_BYTES`] bytes, no control characters. Implemented for [`Uuid`] (hyphenated,
/// 36 bytes) and the integer types; sealed, since another type's text could break that promise.
pub trait StreamKey: fmt::Display + sealed::Sealed {}

macro_rules! stream_keys {
    ($($key:ty),*) => {$(
        impl sealed::Sealed for $key {}
        impl StreamKey for $key {}
    )*};
}
stream_keys!(
    Uuid, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl<K: StreamKey> sealed::Sealed for &K {}
impl<K: StreamKey> StreamKey for &K {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_accepts_255_bytes_and_refuses_256() {
        assert!(StreamId::new("a".repeat(255)).is_ok());
        assert_eq!(
            StreamId::new("a".repeat(256)),
            Err(InvalidStreamId::TooLong { len: 256 })
        );
    }

    #[test]
    fn stream_id_counts_bytes_not_characters() {
        // 128 two-byte characters = 256 bytes.
        assert!(matches!(
            StreamId::new("é".repeat(128)),
            Err(InvalidStreamId::TooLong { len: 256 })
        ));
    }

    #[test]
    fn stream_id_refuses_control_characters_anywhere() {
        for bad in ["\0", "a\u{7f}", "tab\there", "\u{1b}[31m", "x\u{85}"] {
            assert!(
                matches!(
                    StreamId::new(bad),
                    Err(InvalidStreamId::ControlCharacter { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn stream_id_keeps_sql_and_unicode_text_verbatim() {
        let id = StreamId::new("o'reilly-\"; DROP TABLE events; --ü").unwrap();
        assert_eq!(id.as_str(), "o'reilly-\"; DROP TABLE events; --ü");
        assert_eq!(id.category(), "o'reilly");
    }

    #[test]
    fn expected_version_matches_the_stream_state() {
        use ExpectedVersion::*;
        assert!(Any.is_met_by(None) && Any.is_met_by(Some(3)));
        assert!(NoStream.is_met_by(None) && !NoStream.is_met_by(Some(0)));
        assert!(!StreamExists.is_met_by(None) && StreamExists.is_met_by(Some(0)));
        assert!(Exact(2).is_met_by(Some(2)) && !Exact(2).is_met_by(Some(3)));
        assert!(!Exact(0).is_met_by(None));
    }

    #[test]
    fn category_streams_are_the_validated_ids() {
        const TRANSFERS: Category = Category::new("transfer");
        let id = Uuid::from_u128(u128::MAX);
        assert_eq!(
            TRANSFERS.stream(id),
            StreamId::new(format!("transfer-{id}")).unwrap()
        );
        assert_eq!(TRANSFERS.stream(id).category(), "transfer");
        assert_eq!(
            TRANSFERS.key_of(&TRANSFERS.stream(id)),
            Some(id.to_string().as_str())
        );
        assert_eq!(
            TRANSFERS.key_of(&StreamId::new("transfers-1").unwrap()),
            None
        );
    }

    #[test]
    fn the_longest_category_and_key_fit_in_a_stream_id() {
        assert_eq!(i128::MIN.to_string().len(), MAX_STREAM_KEY_BYTES);
        let name: &'static str = "c".repeat(MAX_CATEGORY_BYTES).leak();
        let longest = Category::new(name).stream(i128::MIN);
        assert_eq!(StreamId::new(longest.as_str()), Ok(longest));
    }

    #[test]
    fn categories_refuse_what_would_make_a_bad_stream_id() {
        let too_long: &'static str = "c".repeat(MAX_CATEGORY_BYTES + 1).leak();
        for bad in ["", "a-b", "a\nb", "x\u{7f}", "x\u{85}", too_long] {
            assert!(
                std::panic::catch_unwind(|| Category::new(bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(Category::new("ünïcode").as_str(), "ünïcode");
    }
}

//! [`Position`], a place in a store's global log (documented there), and its text form.

use std::fmt;
use std::str::FromStr;

/// A place in the global log of a store: totally ordered, opaque to users.
///
/// Two `u64` parts, compared in order, so that every store's native position fits: PostgreSQL's
/// `(transaction_id, global_position)`, EventStoreDB's `(commit, prepare)`, the memory store's
/// `(n, n)`. Start positions are exclusive: reading "after" a position never returns the event at
/// it, so a checkpoint is simply the position of the last event handled.
///
/// A position is what a checkpoint holds and what a global read or subscription starts
/// after. Its text form, `<commit>/<prepare>`, is what [`Display`](fmt::Display) writes and
/// [`FromStr`] reads back, so a position can travel through a URL or a header:
///
/// ```
/// use decider_core::Position;
///
/// let position = Position::new(7, 42);
/// assert_eq!(position.to_string(), "7/42");
/// assert_eq!("7/42".parse::<Position>(), Ok(position));
/// assert!("7".parse::<Position>().is_err());
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    commit: u64,
    prepare: u64,
}

impl Position {
    /// Builds a position from a store's two native parts. Meant for store adapters; users only
    /// compare and persist positions.
    pub const fn new(commit: u64, prepare: u64) -> Self {
        Self { commit, prepare }
    }

    /// The first, major part (PostgreSQL: transaction id; EventStoreDB: commit position).
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The second, minor part (PostgreSQL: global position; EventStoreDB: prepare position).
    pub const fn prepare(self) -> u64 {
        self.prepare
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.prepare)
    }
}

/// Why a text is not a [`Position`]: it is not `<commit>/<prepare>`, two decimal `u64`s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a position: expected <commit>/<prepare>, two unsigned 64-bit integers")]
pub struct InvalidPosition {
    /// The refused text.
    pub text: String,
}

impl FromStr for Position {
    type Err = InvalidPosition;

    /// Reads what [`Display`](fmt::Display) writes: `<commit>/<prepare>`, decimal digits only
    /// (no sign, no spaces).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let part = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u64>().ok()
        };
        text.split_once('/')
            .and_then(|(commit, prepare)| Some(Self::new(part(commit)?, part(prepare)?)))
            .ok_or_else(|| InvalidPosition {
                text: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn positions_order_by_commit_then_prepare() {
        assert!(Position::new(1, 9) < Position::new(2, 0));
        assert!(Position::new(2, 0) < Position::new(2, 1));
    }

    #[test]
    fn texts_other_than_two_unsigned_parts_are_refused() {
        let too_big = format!("{}0/1", u64::MAX);
        for bad in [
            "", "/", "1", "1/", "/1", "1/2/3", "+1/2", "1/-2", " 1/2", "1/2 ", "a/b", &too_big,
        ] {
            assert_eq!(
                bad.parse::<Position>(),
                Err(InvalidPosition {
                    text: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn display_and_from_str_round_trip(commit: u64, prepare: u64) {
            let position = Position::new(commit, prepare);
            prop_assert_eq!(position.to_string().parse::<Position>(), Ok(position));
        }

        #[test]
        fn a_parsed_text_is_written_back_the_same(commit: u64, prepare: u64) {
            let text = format!("{commit}/{prepare}");
            prop_assert_eq!(text.parse::<Position>().map(|p| p.to_string()), Ok(text));
        }
    }
}

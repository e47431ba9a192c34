//! A stream's state as far as it has been folded: what [`CommandHandler::load`] returns and what
//! the [`StateCache`] holds.
//!
//! [`CommandHandler::load`]: crate::CommandHandler::load
//! [`StateCache`]: crate::StateCache

/// The state of a stream as of one of its revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    /// The fold of the stream's events up to `last_revision`.
    pub state: S,
    /// The last revision folded into `state` (when loaded: the stream's last revision); `None`
    /// when the stream has no event.
    pub last_revision: Option<u64>,
}

//! Dynamic consistency boundaries (the DCB specification, dcb.events): decisions checked
//! against a query of tagged events instead of one stream.
//!
//! Some rules span streams: "a course has 30 seats" and "a student takes at most 5 courses"
//! both govern one subscription; "a username is unique". A DCB decision reads the events that
//! match a [`Query`] (by type and [`Tag`]), folds them, decides, and appends its events on the
//! [`AppendCondition`] that nothing matching the query was appended since it read. Stores that
//! can keep that promise race-free implement [`DcbStore`]; [`DecisionHandler`] runs a
//! [`DecisionModel`] on one, retrying on conflict as [`CommandHandler`](crate::CommandHandler)
//! does. Streams stay: both are views of one log (ADR 11).

mod handler;
mod query;
mod store;
mod tag;

pub use handler::{DecisionHandler, DecisionModel};
pub use query::{Query, QueryItem};
pub use store::{AppendCondition, DcbStore};
pub use tag::{InvalidTag, MAX_TAG_BYTES, Tag};

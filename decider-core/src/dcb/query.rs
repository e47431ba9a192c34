//! Queries: which events a decision depends on, as the DCB specification defines them.

use std::collections::BTreeSet;

use crate::dcb::Tag;

/// One alternative of a [`Query`]: an event matches when its type is one of `event_types`
/// (any type, if there are none) and it carries every one of `tags` (no tag needed, if there
/// are none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct QueryItem {
    event_types: BTreeSet<String>,
    tags: BTreeSet<Tag>,
}

impl QueryItem {
    /// An item matching every event; narrow it with [`with_types`](Self::with_types) and
    /// [`with_tags`](Self::with_tags).
    pub fn any() -> Self {
        Self::default()
    }

    /// Events carrying every one of `tags`.
    pub fn tagged(tags: impl IntoIterator<Item = Tag>) -> Self {
        Self::any().with_tags(tags)
    }

    /// The same item, also requiring the type to be one of `types` (in addition to the types
    /// it already lists).
    pub fn with_types<T: Into<String>>(mut self, types: impl IntoIterator<Item = T>) -> Self {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// The same item, also requiring each of `tags`.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags.extend(tags);
        self
    }

    /// The event types (empty: any type), in order.
    pub fn event_types(&self) -> impl ExactSizeIterator<Item = &str> {
        self.event_types.iter().map(String::as_str)
    }

    /// The tags an event must carry, in order.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &Tag> {
        self.tags.iter()
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[Tag]) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(event_type))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }

    /// Whether it matches every event.
    pub fn is_any(&self) -> bool {
        self.event_types.is_empty() && self.tags.is_empty()
    }
}

/// The events a decision depends on: those matching any of its items (OR across items).
///
/// ```
/// # use decider_core::dcb::{Query, QueryItem, Tag};
/// let course = Tag::pair("course", "c1")?;
/// let student = Tag::pair("student", "s7")?;
/// // The course's capacity and subscriptions, and the student's subscriptions.
/// let query = Query::from(
///     QueryItem::tagged([course.clone()]).with_types(["CourseDefined", "CapacityChanged", "StudentSubscribed"]),
/// )
/// .or(QueryItem::tagged([student.clone()]).with_types(["StudentSubscribed"]));
/// assert!(query.matches("StudentSubscribed", &[student.clone(), Tag::pair("course", "c2")?]));
/// assert!(!query.matches("CourseDefined", &[student]));
/// assert!(Query::all().matches("Anything", &[]));
/// # Ok::<(), decider_core::dcb::InvalidTag>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    /// Never empty.
    items: Vec<QueryItem>,
}

impl Query {
    /// The query matching every event.
    pub fn all() -> Self {
        Self::from(QueryItem::any())
    }

    /// The same query, also matching what `item` matches.
    pub fn or(mut self, item: QueryItem) -> Self {
        if !self.items.contains(&item) {
            self.items.push(item);
        }
        self
    }

    /// Its items (at least one).
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[Tag]) -> bool {
        self.items.iter().any(|item| item.matches(event_type, tags))
    }

    /// Whether it matches every event.
    pub fn is_all(&self) -> bool {
        self.items.iter().any(QueryItem::is_any)
    }
}

impl From<QueryItem> for Query {
    fn from(item: QueryItem) -> Self {
        Self { items: vec![item] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(text: &str) -> Tag {
        Tag::new(text).unwrap()
    }

    #[test]
    fn an_item_needs_one_of_its_types_and_all_of_its_tags() {
        let item = QueryItem::tagged([tag("a"), tag("b")]).with_types(["X", "Y"]);
        assert!(item.matches("X", &[tag("b"), tag("a"), tag("c")]));
        assert!(item.matches("Y", &[tag("a"), tag("b")]));
        assert!(!item.matches("Z", &[tag("a"), tag("b")]), "another type");
        assert!(!item.matches("X", &[tag("a")]), "a tag missing");
        assert!(QueryItem::any().with_types(["X"]).matches("X", &[]));
        assert!(QueryItem::tagged([tag("a")]).matches("Anything", &[tag("a")]));
    }

    #[test]
    fn a_query_matches_what_any_item_matches() {
        let query =
            Query::from(QueryItem::tagged([tag("a")])).or(QueryItem::any().with_types(["X"]));
        assert!(query.matches("X", &[]));
        assert!(query.matches("Y", &[tag("a")]));
        assert!(!query.matches("Y", &[tag("b")]));
        assert!(!query.is_all());
        assert!(query.or(QueryItem::any()).is_all());
    }
}

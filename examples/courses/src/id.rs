//! Course and student ids, checked once when they are made, so that the tag each one names
//! always exists.

use std::fmt;
use std::str::FromStr;

use decider_core::dcb::Tag;
use serde::{Deserialize, Serialize};

/// The longest id, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// Why a text is not a course or student id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an id: ids are 1 to {MAX_ID_CHARS} characters without control characters")]
pub struct InvalidId {
    /// The refused text (cut at 80 characters).
    pub text: String,
}

/// The tag `key:id`, if `id` is an id.
///
/// Ids are narrower than tags (at most [`MAX_ID_CHARS`] characters, at most 4 bytes each, well
/// under a tag's 512 bytes), so a valid id always makes a tag; the tag is made here, once,
/// and kept beside the id, so that tagging an event never fails.
fn tag(key: &str, id: &str) -> Result<Tag, InvalidId> {
    let refused = || InvalidId {
        text: id.chars().take(80).collect(),
    };
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(refused());
    }
    Tag::pair(key, id).map_err(|_| refused())
}

/// A course, such as `algebra`; its events carry the tag `course:<id>`.
///
/// ```
/// # use courses::CourseId;
/// let algebra = CourseId::new("algebra")?;
/// assert_eq!(algebra.tag().as_str(), "course:algebra");
/// assert!(CourseId::new("").is_err());
/// # Ok::<(), courses::InvalidId>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CourseId {
    id: String,
    tag: Tag,
}

impl CourseId {
    /// The course `id`, if it is 1 to [`MAX_ID_CHARS`] characters without control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        let tag = tag("course", &id)?;
        Ok(Self { id, tag })
    }

    /// The tag of the course's events: `course:<id>`.
    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

/// A student, such as `ada`; the events of their subscriptions carry the tag `student:<id>`.
///
/// ```
/// # use courses::StudentId;
/// assert_eq!(StudentId::new("ada")?.tag().as_str(), "student:ada");
/// # Ok::<(), courses::InvalidId>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StudentId {
    id: String,
    tag: Tag,
}

impl StudentId {
    /// The student `id`, if it is 1 to [`MAX_ID_CHARS`] characters without control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        let tag = tag("student", &id)?;
        Ok(Self { id, tag })
    }

    /// The tag of the student's subscriptions: `student:<id>`.
    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for CourseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Display for StudentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

// Without the tag, which the id implies: `CourseId("algebra")`.
impl fmt::Debug for CourseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CourseId").field(&self.id).finish()
    }
}

impl fmt::Debug for StudentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StudentId").field(&self.id).finish()
    }
}

impl FromStr for CourseId {
    type Err = InvalidId;

    fn from_str(id: &str) -> Result<Self, InvalidId> {
        Self::new(id)
    }
}

impl FromStr for StudentId {
    type Err = InvalidId;

    fn from_str(id: &str) -> Result<Self, InvalidId> {
        Self::new(id)
    }
}

// serde's `try_from`/`into`: an id is stored as its text, and checked again when it is read.
impl TryFrom<String> for CourseId {
    type Error = InvalidId;

    fn try_from(id: String) -> Result<Self, InvalidId> {
        Self::new(id)
    }
}

impl TryFrom<String> for StudentId {
    type Error = InvalidId;

    fn try_from(id: String) -> Result<Self, InvalidId> {
        Self::new(id)
    }
}

impl From<CourseId> for String {
    fn from(course: CourseId) -> Self {
        course.id
    }
}

impl From<StudentId> for String {
    fn from(student: StudentId) -> Self {
        student.id
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ids_are_short_printable_text_and_always_make_a_tag() {
        assert!(CourseId::new("algebra").is_ok());
        assert!(StudentId::new("ünïcødé ✓").is_ok());
        let longest = "𝄞".repeat(MAX_ID_CHARS);
        assert_eq!(
            StudentId::new(longest.clone()).map(|s| s.tag().as_str().len()),
            Ok("student:".len() + longest.len())
        );
        assert!(CourseId::new("𝄞".repeat(MAX_ID_CHARS + 1)).is_err());
        assert!(CourseId::new("").is_err());
        assert!(CourseId::new("a\nb").is_err());
        assert!(StudentId::new("a\0b").is_err());
    }

    #[test]
    fn ids_are_stored_as_their_text_and_checked_when_read() {
        let algebra = CourseId::new("algebra").unwrap();
        assert_eq!(serde_json::to_string(&algebra).unwrap(), r#""algebra""#);
        assert_eq!(
            serde_json::from_str::<CourseId>(r#""algebra""#).unwrap(),
            algebra
        );
        assert!(serde_json::from_str::<StudentId>(r#""""#).is_err());
    }
}

//! Failure messages of the specifications: what was given, expected and found, with the first
//! difference marked.

use std::any::type_name;
use std::fmt::{Debug, Display, Write as _};

/// The first index at which `expected` and `actual` differ, counting a missing item as a
/// difference.
pub(super) fn first_difference<T: PartialEq>(expected: &[T], actual: &[T]) -> Option<usize> {
    let common = expected.len().min(actual.len());
    (0..common)
        .find(|&index| expected[index] != actual[index])
        .or((expected.len() != actual.len()).then_some(common))
}

pub(super) fn command_name<C>() -> String {
    format!("a {}", type_name::<C>())
}

/// The message of a failed specification, built section by section.
pub(super) struct Report(String);

impl Report {
    pub(super) fn new(kind: &str, headline: impl Display) -> Self {
        Self(format!("{kind} spec failed: {headline}\n"))
    }

    /// `label: value`.
    pub(super) fn line(mut self, label: &str, value: impl Display) -> Self {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "{label}: {value}");
        self
    }

    /// `label: {value:?}`.
    pub(super) fn debug(self, label: &str, value: &impl Debug) -> Self {
        self.line(label, format_args!("{value:?}"))
    }

    /// One item per line with its index; see [`Report::lines`].
    pub(super) fn events<T: Debug>(self, label: &str, items: &[T], mark: Option<usize>) -> Self {
        let items: Vec<_> = items.iter().map(|item| format!("{item:?}")).collect();
        self.lines(label, &items, mark)
    }

    /// One item per line with its index, the item at `mark` flagged with `>`; a mark past the
    /// end shows where an item is missing.
    pub(super) fn lines(mut self, label: &str, items: &[String], mark: Option<usize>) -> Self {
        if items.is_empty() {
            return self.line(label, "(none)");
        }
        let _ = writeln!(self.0, "{label}:");
        for (index, item) in items.iter().enumerate() {
            let flag = if mark == Some(index) { '>' } else { ' ' };
            let _ = writeln!(self.0, "  {flag} [{index}] {item}");
        }
        if let Some(missing) = mark.filter(|&mark| mark >= items.len()) {
            let _ = writeln!(self.0, "  > [{missing}] (missing)");
        }
        self
    }

    /// A multi-line text, indented, the line at `mark` flagged with `>`.
    pub(super) fn text(mut self, label: &str, text: &str, mark: Option<usize>) -> Self {
        let _ = writeln!(self.0, "{label}:");
        let mut count = 0;
        for (index, line) in text.lines().enumerate() {
            let flag = if mark == Some(index) { '>' } else { ' ' };
            let _ = writeln!(self.0, "  {flag} {line}");
            count = index + 1;
        }
        if mark.is_some_and(|mark| mark >= count) {
            let _ = writeln!(self.0, "  > (missing)");
        }
        self
    }
}

/// Panics with the report, at the caller's location.
#[track_caller]
pub(super) fn fail(report: Report) -> ! {
    panic!("{}", report.0.trim_end())
}

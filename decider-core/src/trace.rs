//! [`TraceParent`] (documented there), the W3C trace context that travels in [`Metadata`], with
//! its ids [`TraceId`] and [`SpanId`] and the parse error [`InvalidTraceParent`].
//!
//! [`Metadata`]: crate::Metadata

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::RecordedEvent;

/// The 16-byte id shared by every span of one trace; never all zeros.
///
/// Displayed as 32 lowercase hex digits, as in a `traceparent` header.
// Bytes rather than a `NonZeroU128`: a `u128` is 16-aligned, which would pad every
// `Metadata`, and so every event, by more than the id itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// The id of these 16 bytes read big-endian; `None` for zero, which W3C reserves as invalid.
    pub fn new(id: u128) -> Option<Self> {
        (id != 0).then(|| Self(id.to_be_bytes()))
    }

    /// A random id: a new trace.
    pub fn random() -> Self {
        // One more than a draw below the maximum: never zero, so valid by construction.
        Self((fastrand::u128(..u128::MAX) + 1).to_be_bytes())
    }

    /// The id as a number (its 16 bytes big-endian).
    pub fn get(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The id's 16 bytes, as OpenTelemetry takes them.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.get())
    }
}

/// The 8-byte id of one span (an operation) in a trace; never all zeros.
///
/// Displayed as 16 lowercase hex digits, as in a `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

impl SpanId {
    /// The id of these 8 bytes read big-endian; `None` for zero, which W3C reserves as invalid.
    pub fn new(id: u64) -> Option<Self> {
        NonZeroU64::new(id).map(Self)
    }

    /// A random id: a new span. Drawn from a fast thread-local generator, not the operating
    /// system's: span ids need to be unique, not unguessable, and every traced command draws one.
    pub fn random() -> Self {
        // One more than a draw below the maximum: never zero.
        Self(NonZeroU64::MIN.saturating_add(fastrand::u64(..u64::MAX)))
    }

    /// The id as a number (its 8 bytes big-endian).
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The id's 8 bytes, as OpenTelemetry takes them.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.get().to_be_bytes()
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A W3C [trace context](https://www.w3.org/TR/trace-context/) `traceparent`: which trace a
/// message belongs to and which span caused it.
///
/// The header is `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`, version `00`, in
/// lowercase; all-zero ids are invalid. It travels in [`Metadata::trace_parent`](crate::Metadata)
/// and so in every event's stored metadata, under the key `$traceparent`.
///
/// ```
/// use decider_core::TraceParent;
///
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let parent: TraceParent = header.parse()?;
/// assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(parent.sampled());
/// assert_eq!(parent.to_string(), header);
/// assert!("00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse::<TraceParent>().is_err());
/// # Ok::<(), decider_core::InvalidTraceParent>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that caused the message carrying this header.
    pub parent_id: SpanId,
    /// The trace flags; bit 0 is "sampled", the others are reserved and kept as received.
    pub flags: u8,
}

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

/// The one version of the header this crate reads and writes.
const VERSION: &str = "00";

/// Length of a version-00 header: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const HEADER_LEN: usize = 55;

impl TraceParent {
    /// A new, sampled trace: random trace and parent ids.
    pub fn random() -> Self {
        Self {
            trace_id: TraceId::random(),
            parent_id: SpanId::random(),
            flags: SAMPLED,
        }
    }

    /// The same trace and flags, caused by span `parent_id`: what a span passes on to the
    /// messages it sends.
    pub fn with_parent_id(self, parent_id: SpanId) -> Self {
        Self { parent_id, ..self }
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION}-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Why a `traceparent` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTraceParent {
    /// Not the 55 characters of a version-00 header.
    #[error("a traceparent is 55 characters, not {0}")]
    Length(usize),
    /// A version other than `00`.
    #[error("traceparent version {0:?} is not supported (only 00)")]
    Version(String),
    /// The fields are not separated by `-`, or one is not lowercase hex.
    #[error("a traceparent is 00-<32 hex>-<16 hex>-<2 hex>, in lowercase")]
    Format,
    /// The trace id is all zeros.
    #[error("the traceparent's trace id is all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("the traceparent's parent id is all zeros")]
    ZeroParentId,
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(header: &str) -> Result<Self, InvalidTraceParent> {
        if header.len() != HEADER_LEN {
            return Err(InvalidTraceParent::Length(header.len()));
        }
        // 55 bytes, but not necessarily 55 characters: check before slicing at byte offsets.
        if !header.is_ascii() {
            return Err(InvalidTraceParent::Format);
        }
        let (version, trace_id, parent_id, flags) =
            (&header[..2], &header[3..35], &header[36..52], &header[53..]);
        if [2, 35, 52].iter().any(|&at| header.as_bytes()[at] != b'-') {
            return Err(InvalidTraceParent::Format);
        }
        if !is_lower_hex(version) {
            return Err(InvalidTraceParent::Format);
        }
        if version != VERSION {
            return Err(InvalidTraceParent::Version(version.to_owned()));
        }
        let trace_id = hex(trace_id);
        let trace_id = TraceId::new(trace_id.ok_or(InvalidTraceParent::Format)?)
            .ok_or(InvalidTraceParent::ZeroTraceId)?;
        let parent_id = hex(parent_id).and_then(|n| u64::try_from(n).ok());
        let parent_id = SpanId::new(parent_id.ok_or(InvalidTraceParent::Format)?)
            .ok_or(InvalidTraceParent::ZeroParentId)?;
        let flags = hex(flags).and_then(|n| u8::try_from(n).ok());
        Ok(Self {
            trace_id,
            parent_id,
            flags: flags.ok_or(InvalidTraceParent::Format)?,
        })
    }
}

fn is_lower_hex(digits: &str) -> bool {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex digits (at most 32) as a number; `None` for anything else.
fn hex(digits: &str) -> Option<u128> {
    if !is_lower_hex(digits) {
        return None;
    }
    u128::from_str_radix(digits, 16).ok()
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let header = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        header.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads an optional `traceparent` that is dropped, not refused, when invalid: a malformed
/// trace header written by another tool must not make an event unreadable.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TraceParent>, D::Error> {
    let header = Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    Ok(header.and_then(|header| header.parse().ok()))
}

/// Where a tracer that draws span ids of its own (OpenTelemetry's, say) meets the trace
/// contexts in metadata, so that the ids stored with events are the tracer's ids.
///
/// Set once per process with [`set_trace_hook`]; without one, span ids are drawn at random.
/// The crate calls it for every span that continues a trace: a traced command's `command` span
/// and the `saga_event`, `process_event` and `projection_event` spans of reactions to traced
/// events. An application calls [`continue_trace`] and [`start_trace`] for its own spans (an
/// HTTP request's, say).
pub trait TraceHook: Send + Sync + 'static {
    /// `span`, just opened, continues `parent`'s trace: make it a child of `parent` in the
    /// tracer and return the span's id there, which the messages it sends will name as their
    /// parent. `None`: the tracer does not know the span; an id is drawn at random.
    fn continue_trace(&self, span: &tracing::Span, parent: &TraceParent) -> Option<SpanId>;

    /// `span`, just opened, starts a trace: its trace context in the tracer (its own id as
    /// parent id). `None`: a random trace is started.
    fn start_trace(&self, span: &tracing::Span) -> Option<TraceParent>;
}

static HOOK: OnceLock<Box<dyn TraceHook>> = OnceLock::new();

/// Sets the process's [`TraceHook`]; `false` if one was set before (which stays).
pub fn set_trace_hook(hook: impl TraceHook) -> bool {
    HOOK.set(Box::new(hook)).is_ok()
}

/// The id of `span`, which continues `parent`'s trace: from the [`TraceHook`], or random.
pub fn continue_trace(span: &tracing::Span, parent: &TraceParent) -> SpanId {
    HOOK.get()
        .and_then(|hook| hook.continue_trace(span, parent))
        .unwrap_or_else(SpanId::random)
}

/// The trace that `span` starts, with the span as parent: from the [`TraceHook`], or random.
pub fn start_trace(span: &tracing::Span) -> TraceParent {
    HOOK.get()
        .and_then(|hook| hook.start_trace(span))
        .unwrap_or_else(TraceParent::random)
}

/// A handler's reaction to an event that carries a trace context: the span that handles the event
/// continues the event's trace, as a new span whose parent is the span that wrote the event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaction {
    /// The event's trace context.
    cause: TraceParent,
    /// The reaction's own span.
    span_id: SpanId,
}

impl Reaction {
    /// The reaction to `event` in `span` (opened by [`reaction_span!`]), if the event is traced;
    /// records the span's id in it.
    pub(crate) fn begin(span: &tracing::Span, event: &RecordedEvent) -> Option<Self> {
        let cause = event.metadata.trace_parent?;
        let span_id = continue_trace(span, &cause);
        span.record("span_id", tracing::field::display(span_id));
        Some(Self { cause, span_id })
    }

    /// The trace context of the messages the reaction sends: its trace, itself as parent.
    pub(crate) fn child(&self) -> TraceParent {
        self.cause.with_parent_id(self.span_id)
    }
}

/// An info span named `$name` for handling `$event`, with its trace's fields: `trace_id`,
/// `parent_id` (the span that wrote the event), and `span_id`, which [`Reaction::begin`]
/// records; all empty when the event is untraced. `parent:` places it in a span other than the
/// current one.
macro_rules! reaction_span {
    ($(parent: $parent:expr,)? $name:literal, $event:expr) => {
        tracing::info_span!(
            $(parent: $parent,)?
            $name,
            stream = %$event.stream,
            revision = $event.revision,
            trace_id = $event.metadata.trace_parent.map(|t| tracing::field::display(t.trace_id)),
            span_id = tracing::field::Empty,
            parent_id = $event.metadata.trace_parent.map(|t| tracing::field::display(t.parent_id)),
        )
    };
}
pub(crate) use reaction_span;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_parses_into_its_fields() {
        let parent: TraceParent = EXAMPLE.parse().unwrap();
        assert_eq!(
            parent.trace_id.get(),
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736
        );
        assert_eq!(parent.parent_id.get(), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(parent.flags, 1);
        assert_eq!(parent.trace_id.to_bytes()[0], 0x4b);
    }

    #[test]
    fn malformed_headers_are_refused_with_the_reason() {
        let refused = |header: &str| header.parse::<TraceParent>().unwrap_err();
        assert_eq!(refused(""), InvalidTraceParent::Length(0));
        assert_eq!(refused(&EXAMPLE[1..]), InvalidTraceParent::Length(54));
        assert_eq!(
            refused(&EXAMPLE.replacen("00", "01", 1)),
            InvalidTraceParent::Version("01".into())
        );
        assert_eq!(
            refused(&EXAMPLE.replacen("00", "ff", 1)),
            InvalidTraceParent::Version("ff".into())
        );
        assert_eq!(refused(&EXAMPLE.to_uppercase()), InvalidTraceParent::Format);
        assert_eq!(
            refused(&EXAMPLE.replace('-', "_")),
            InvalidTraceParent::Format
        );
        assert_eq!(
            refused("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
            InvalidTraceParent::Format
        );
        assert_eq!(
            refused("00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            InvalidTraceParent::Format
        );
        assert_eq!(
            refused("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            InvalidTraceParent::ZeroTraceId
        );
        assert_eq!(
            refused("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            InvalidTraceParent::ZeroParentId
        );
        // 55 bytes, but not 55 characters.
        assert_eq!(
            refused("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é"),
            InvalidTraceParent::Format
        );
        assert_eq!(
            refused(&format!("{EXAMPLE}-")),
            InvalidTraceParent::Length(56)
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags() {
        let parent: TraceParent = EXAMPLE.parse().unwrap();
        let span = SpanId::new(7).unwrap();
        let child = parent.with_parent_id(span);
        assert_eq!(
            (child.trace_id, child.parent_id, child.flags),
            (parent.trace_id, span, 1)
        );
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000007-01"
        );
    }

    #[test]
    fn random_traces_are_sampled_and_distinct() {
        let (a, b) = (TraceParent::random(), TraceParent::random());
        assert!(a.sampled());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.to_string().parse::<TraceParent>().unwrap(), a);
    }

    #[test]
    fn serde_writes_the_header_text() {
        let parent: TraceParent = EXAMPLE.parse().unwrap();
        let json = serde_json::to_string(&parent).unwrap();
        assert_eq!(json, format!("\"{EXAMPLE}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), parent);
        assert!(serde_json::from_str::<TraceParent>("\"00-zz\"").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(trace in 1..=u128::MAX, span in 1..=u64::MAX, flags: u8) {
            let parent = TraceParent {
                trace_id: TraceId::new(trace).unwrap(),
                parent_id: SpanId::new(span).unwrap(),
                flags,
            };
            let header = parent.to_string();
            prop_assert_eq!(header.len(), HEADER_LEN);
            prop_assert_eq!(header.parse::<TraceParent>(), Ok(parent));
        }

        #[test]
        fn parsing_any_text_never_panics_and_reads_back_as_written(text in "[0-9a-f-]{0,60}") {
            if let Ok(parent) = text.parse::<TraceParent>() {
                prop_assert_eq!(parent.to_string(), text);
            }
        }
    }
}

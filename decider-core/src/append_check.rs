//! [`check_append`]: what every store refuses before it writes anything.
//!
//! One check for every store, so that an input is refused the same way everywhere rather than
//! accepted by one store and refused by the next database's text type (PostgreSQL's `text` and
//! `jsonb` cannot hold U+0000; SQLite and memory could, and a log moved between them would then
//! not load).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::event::{ContentType, EventData};
use crate::metadata::Metadata;
use crate::store::StoreError;
use crate::stream::StreamId;

/// The largest payload an event may carry, in bytes: every store takes at least this much.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Checks an append before a store writes it, answering [`StoreError::InvalidInput`] for:
///
/// - an empty batch, or an event id twice in it;
/// - an empty event type, or one holding U+0000;
/// - a payload over [`MAX_PAYLOAD_BYTES`];
/// - a JSON payload that is not JSON, or that holds U+0000 or a lone surrogate (`"\ud800"`) in
///   any string or key: text no store can keep as text;
/// - metadata holding U+0000 in the idempotency key, the tracestate, or a header's name or
///   value.
///
/// Stream ids need no check here: [`StreamId`] cannot hold such characters.
///
/// ```
/// use decider_core::{check_append, EventData, StoreError, StreamId};
///
/// let stream = StreamId::new("account-1")?;
/// assert!(check_append(&stream, &[EventData::json("Opened", r#"{"owner":"Ada"}"#)]).is_ok());
///
/// let nul = EventData::json("Opened", r#"{"owner":"Ada\u0000"}"#);
/// assert!(matches!(check_append(&stream, &[nul]), Err(StoreError::InvalidInput(_))));
/// # Ok::<(), decider_core::InvalidStreamId>(())
/// ```
pub fn check_append(stream: &StreamId, events: &[EventData]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "the append to {stream} holds no event"
        )));
    }
    let mut ids = HashSet::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let refuse = |why: String| {
            StoreError::InvalidInput(format!(
                "event {index} ({:?}, id {}) of the append to {stream}: {why}",
                event.event_type, event.id
            ))
        };
        if !ids.insert(event.id) {
            return Err(refuse("its id appears twice in the batch".to_owned()));
        }
        if event.event_type.is_empty() || event.event_type.contains('\0') {
            return Err(refuse(
                "the event type is empty or holds a NUL character (U+0000)".to_owned(),
            ));
        }
        if event.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(refuse(format!(
                "the payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                event.payload.len()
            )));
        }
        if event.content_type == ContentType::Json {
            check_json(&event.payload).map_err(|e| refuse(format!("the payload {e}")))?;
        }
        check_metadata(&event.metadata).map_err(|e| refuse(format!("the metadata {e}")))?;
    }
    Ok(())
}

/// Parses `json` and checks every string and key in it (`Err` says why, after "the payload").
fn check_json(json: &[u8]) -> Result<(), String> {
    let mut parser = serde_json::Deserializer::from_slice(json);
    TextOnly
        .deserialize(&mut parser)
        .and_then(|()| parser.end())
        .map_err(|e| {
            if e.is_data() {
                // Our own refusal (a NUL): serde_json adds the place in the document.
                e.to_string()
            } else {
                format!("is not JSON: {e}")
            }
        })
}

fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    let has_nul = |text: &str| text.contains('\0');
    if metadata.idempotency_key.as_deref().is_some_and(has_nul) {
        return Err("idempotency key holds a NUL character (U+0000)".to_owned());
    }
    if metadata.trace_state.as_deref().is_some_and(has_nul) {
        return Err("tracestate holds a NUL character (U+0000)".to_owned());
    }
    match metadata
        .headers
        .iter()
        .find(|(name, value)| has_nul(name) || has_nul(value))
    {
        Some((name, _)) => Err(format!(
            "header {name:?} holds a NUL character (U+0000) in its name or value"
        )),
        None => Ok(()),
    }
}

/// Walks a JSON document, refusing U+0000 in its strings and keys. Lone surrogates are refused
/// by the parser itself, because a string is decoded to be looked at (where
/// `serde::de::IgnoredAny` would skip it undecoded); strings without escapes are borrowed, not
/// copied.
#[derive(Clone, Copy)]
struct TextOnly;

impl<'de> DeserializeSeed<'de> for TextOnly {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextOnly {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        if text.contains('\0') {
            Err(E::custom("holds a NUL character (U+0000) in a string"))
        } else {
            Ok(())
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        while entries.next_key_seed(self)?.is_some() {
            entries.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn stream() -> StreamId {
        StreamId::new("s-1").unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(events: &[EventData]) -> String {
        match check_append(&stream(), events) {
            Err(StoreError::InvalidInput(message)) => message,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_events() {
        let events = [
            EventData::json(
                "Opened",
                r#"{"owner":"Ada \u00e9 \ud83d\ude00","tags":["a",1,2.5,null,true]}"#,
            ),
            EventData::json("Closed", "null"),
            EventData {
                content_type: ContentType::Binary,
                ..EventData::json("Blob", b"\0\0not json".to_vec())
            },
        ];
        assert_eq!(check_append(&stream(), &events), Ok(()));
    }

    #[test]
    fn refuses_nul_anywhere_in_a_json_payload() {
        for payload in [
            r#""\u0000""#,
            r#"{"owner":"Ada\u0000"}"#,
            r#"{"own\u0000er":"Ada"}"#,
            r#"{"a":[{"b":["x","y\u0000z"]}]}"#,
        ] {
            let message = refused(&[EventData::json("Opened", payload)]);
            assert!(message.contains("NUL"), "{payload}: {message}");
        }
        // An escaped backslash before "u0000" is the six characters \u0000, not a NUL.
        let text = EventData::json("Opened", r#"{"owner":"\\u0000"}"#);
        assert_eq!(check_append(&stream(), &[text]), Ok(()));
    }

    #[test]
    fn refuses_lone_surrogates_and_what_is_not_json() {
        for payload in [r#""\ud800""#, r#"{"a":"\udc00x"}"#, "{", "[1,]", "1 2", ""] {
            let message = refused(&[EventData::json("Opened", payload)]);
            assert!(message.contains("is not JSON"), "{payload}: {message}");
        }
    }

    #[test]
    fn refuses_nul_in_the_event_type_and_the_metadata() {
        assert!(refused(&[EventData::json("Open\0ed", "{}")]).contains("event type"));
        assert!(refused(&[EventData::json("", "{}")]).contains("event type"));
        let keyed = Metadata::default().with_idempotency_key("key\0");
        let message = refused(&[EventData::json("Opened", "{}").with_metadata(keyed)]);
        assert!(message.contains("idempotency key"), "{message}");
        for (name, value) in [("user\0", "ada"), ("user", "a\0da")] {
            let headed = Metadata::default().with_header(name, value);
            let message = refused(&[EventData::json("Opened", "{}").with_metadata(headed)]);
            assert!(message.contains("header"), "{message}");
        }
    }

    #[test]
    fn refuses_empty_batches_repeated_ids_and_oversized_payloads() {
        assert!(refused(&[]).contains("holds no event"));
        let id = Uuid::from_u128(7);
        let twice = [
            EventData::json("A", "{}").with_id(id),
            EventData::json("B", "{}").with_id(id),
        ];
        assert!(refused(&twice).contains("appears twice"));
        let big = EventData {
            content_type: ContentType::Binary,
            ..EventData::json("Big", vec![0u8; MAX_PAYLOAD_BYTES + 1])
        };
        assert!(refused(&[big]).contains("limit"));
    }

    proptest! {
        /// Whatever a string holds, serde_json's encoding of it is refused exactly when the
        /// string holds U+0000.
        #[test]
        fn a_string_is_refused_exactly_when_it_holds_nul(text in "\\PC*|[a\\x00\\\\\"]{0,8}") {
            let payload = serde_json::to_vec(&serde_json::json!({ "text": text, "list": [&text] }))
                .unwrap_or_else(|e| panic!("{e}"));
            let result = check_append(&stream(), &[EventData::json("T", payload)]);
            prop_assert_eq!(result.is_err(), text.contains('\0'));
        }
    }
}

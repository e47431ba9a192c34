//! Codecs: the [`Codec`] trait, [`JsonCodec`] (where the overview is), [`EncodedEvent`],
//! [`CodecError`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use uuid::Uuid;

use crate::event::{ContentType, EventData, RecordedEvent};
use crate::metadata::Metadata;
use crate::stream::StreamId;

/// An event encoded for storage, before it gets an id and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// The event type.
    pub event_type: String,
    /// The encoded event.
    pub payload: Bytes,
    /// How `payload` is encoded.
    pub content_type: ContentType,
    /// The payload's schema version, recorded in the event's metadata.
    pub schema_version: u32,
}

impl EncodedEvent {
    /// The event ready to append, with its id and metadata; the metadata's schema version is set
    /// from this encoding (left absent for version 1, which keeps most metadata empty).
    pub fn into_event_data(self, id: Uuid, mut metadata: Metadata) -> EventData {
        metadata.schema_version = (self.schema_version > 1).then_some(self.schema_version);
        EventData {
            id,
            event_type: self.event_type,
            payload: self.payload,
            content_type: self.content_type,
            metadata,
        }
    }
}

/// Why an event could not be encoded or decoded. Decoding errors name the event so that an
/// operator can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The stored event type is not one the codec knows.
    #[error("stream {stream} revision {revision}: unknown event type {event_type:?}")]
    UnknownEventType {
        /// Stream of the event.
        stream: StreamId,
        /// Revision of the event in its stream.
        revision: u64,
        /// The unknown type.
        event_type: String,
    },
    /// The event type is known, but its payload does not decode.
    #[error(
        "stream {stream} revision {revision}: cannot decode {event_type:?} \
         (schema version {schema_version}): {reason}"
    )]
    Undecodable {
        /// Stream of the event.
        stream: StreamId,
        /// Revision of the event in its stream.
        revision: u64,
        /// Type of the event.
        event_type: String,
        /// Schema version the payload was written with.
        schema_version: u32,
        /// What the decoder said.
        reason: String,
    },
    /// A domain event could not be encoded.
    #[error("cannot encode event: {reason}")]
    Unencodable {
        /// What the encoder said.
        reason: String,
    },
}

/// Encodes domain events of type `E` for storage and decodes them back.
pub trait Codec<E>: Send + Sync {
    /// Encodes one event.
    fn encode(&self, event: &E) -> Result<EncodedEvent, CodecError>;

    /// Decodes one recorded event, upcasting old payloads first.
    fn decode(&self, event: &RecordedEvent) -> Result<E, CodecError>;
}

type Upcaster = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// The default codec: JSON of an externally tagged serde enum, variant name = event type.
///
/// [`JsonCodec`] is the default: it serialises an externally tagged serde enum (serde's default
/// enum representation) and splits it so that the variant name becomes the event type and the
/// variant's content the payload. No derive macro is needed beyond serde's own.
///
/// Old payloads are brought up to date by upcasters, registered per (event type, schema version):
/// the codec writes each event with its type's current schema version in the metadata, and on
/// decode runs every upcaster from the stored version up to the current one.
///
/// ```
/// use decider_core::{Codec, JsonCodec};
/// use serde::{Deserialize, Serialize};
/// use serde_json::json;
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum Event {
///     Deposited { amount: u64, currency: String },
///     Closed,
/// }
///
/// // Version 1 of `Deposited` had no currency; everything before the change was in euros.
/// let codec = JsonCodec::<Event>::new().with_upcaster("Deposited", 1, |mut payload| {
///     payload["currency"] = json!("EUR");
///     payload
/// });
/// let encoded = codec.encode(&Event::Closed)?;
/// assert_eq!(encoded.event_type, "Closed");
/// assert_eq!(codec.current_version("Deposited"), 2);
/// # Ok::<(), decider_core::CodecError>(())
/// ```
pub struct JsonCodec<E> {
    /// The enum's variant names, read from its `Deserialize` impl; `None` when `E` does not
    /// deserialise as an enum (then unknown types surface as decoding errors).
    known_types: Option<Arc<HashSet<&'static str>>>,
    /// Upcasters by (event type, the schema version they upgrade from).
    upcasters: HashMap<(String, u32), Upcaster>,
    _event: PhantomData<fn(E) -> E>,
}

impl<E> Clone for JsonCodec<E> {
    fn clone(&self) -> Self {
        Self {
            known_types: self.known_types.clone(),
            upcasters: self.upcasters.clone(),
            _event: PhantomData,
        }
    }
}

impl<E> fmt::Debug for JsonCodec<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonCodec")
            .field("event", &std::any::type_name::<E>())
            .field("known_types", &self.known_types)
            .field("upcasters", &self.upcasters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<E: DeserializeOwned> Default for JsonCodec<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: DeserializeOwned> JsonCodec<E> {
    /// A codec for the enum `E`, with no upcasters.
    pub fn new() -> Self {
        Self {
            known_types: variant_names::<E>()
                .map(|names| Arc::new(names.iter().copied().collect())),
            upcasters: HashMap::new(),
            _event: PhantomData,
        }
    }
}

impl<E> JsonCodec<E> {
    /// Registers `upcast`, which turns a payload of `event_type` at `from_version` into one at
    /// `from_version + 1`. The type's current version becomes one past its highest upcaster.
    pub fn with_upcaster(
        mut self,
        event_type: impl Into<String>,
        from_version: u32,
        upcast: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.upcasters
            .insert((event_type.into(), from_version), Arc::new(upcast));
        self
    }

    /// The schema version new events of `event_type` are written with.
    pub fn current_version(&self, event_type: &str) -> u32 {
        self.upcasters
            .keys()
            .filter(|(t, _)| t == event_type)
            .map(|(_, from)| from + 1)
            .max()
            .unwrap_or(1)
    }
}

impl<E: Serialize + DeserializeOwned> Codec<E> for JsonCodec<E> {
    fn encode(&self, event: &E) -> Result<EncodedEvent, CodecError> {
        let json = serde_json::to_vec(event).map_err(|e| CodecError::Unencodable {
            reason: e.to_string(),
        })?;
        let (event_type, payload) = split_tagged(Bytes::from(json))?;
        // A one-field struct serialises just like a variant; only the enum's own names count.
        let is_variant = self
            .known_types
            .as_ref()
            .is_some_and(|known| known.contains(event_type.as_str()));
        if !is_variant {
            return Err(CodecError::Unencodable {
                reason: format!(
                    "{} is not a serde enum with a variant {event_type:?}; JsonCodec needs an \
                     externally tagged enum",
                    std::any::type_name::<E>()
                ),
            });
        }
        let schema_version = if self.upcasters.is_empty() {
            1
        } else {
            self.current_version(&event_type)
        };
        Ok(EncodedEvent {
            event_type,
            payload,
            content_type: ContentType::Json,
            schema_version,
        })
    }

    fn decode(&self, event: &RecordedEvent) -> Result<E, CodecError> {
        let schema_version = event.metadata.schema_version.unwrap_or(1);
        let undecodable = |reason: String| CodecError::Undecodable {
            stream: event.stream.clone(),
            revision: event.revision,
            event_type: event.event_type.clone(),
            schema_version,
            reason,
        };
        if let Some(known) = &self.known_types
            && !known.contains(event.event_type.as_str())
        {
            return Err(CodecError::UnknownEventType {
                stream: event.stream.clone(),
                revision: event.revision,
                event_type: event.event_type.clone(),
            });
        }
        if event.content_type != ContentType::Json {
            return Err(undecodable("payload is binary, not JSON".to_owned()));
        }
        if !self.upcasters.is_empty() && schema_version < self.current_version(&event.event_type) {
            let mut payload: Value =
                serde_json::from_slice(&event.payload).map_err(|e| undecodable(e.to_string()))?;
            let mut version = schema_version;
            while let Some(upcast) = self.upcasters.get(&(event.event_type.clone(), version)) {
                payload = upcast(payload);
                version += 1;
            }
            let tagged = Value::Object([(event.event_type.clone(), payload)].into_iter().collect());
            return serde_json::from_value(tagged).map_err(|e| undecodable(e.to_string()));
        }
        let tagged = join_tagged(&event.event_type, &event.payload);
        serde_json::from_slice(&tagged).map_err(|e| undecodable(e.to_string()))
    }
}

/// Splits serde_json's compact output of an externally tagged enum, `{"Variant":<content>}` or
/// `"Variant"` for a unit variant, into the variant name and its content, without reparsing
/// the content.
fn split_tagged(json: Bytes) -> Result<(String, Bytes), CodecError> {
    let not_an_enum = || CodecError::Unencodable {
        reason: format!(
            "expected an externally tagged enum, serialised as {{\"Type\":payload}}, got {}",
            String::from_utf8_lossy(&json)
        ),
    };
    if json.first() == Some(&b'"') {
        let name: String = serde_json::from_slice(&json).map_err(|_| not_an_enum())?;
        return Ok((name, Bytes::from_static(b"null")));
    }
    if !json.starts_with(b"{\"") || json.last() != Some(&b'}') {
        return Err(not_an_enum());
    }
    // serde_json escapes every '"' inside a key, so the first unescaped '"' after the opening one
    // ends the key; names with escapes take the slow, exact path.
    let key_end = 2 + json[2..]
        .iter()
        .position(|&b| b == b'"')
        .ok_or_else(not_an_enum)?;
    let raw_name = &json[2..key_end];
    if raw_name.contains(&b'\\') {
        let value: Value = serde_json::from_slice(&json).map_err(|_| not_an_enum())?;
        let Value::Object(map) = value else {
            return Err(not_an_enum());
        };
        let mut entries = map.into_iter();
        return match (entries.next(), entries.next()) {
            (Some((name, content)), None) => Ok((name, Bytes::from(content.to_string()))),
            _ => Err(not_an_enum()),
        };
    }
    if json.get(key_end + 1) != Some(&b':') {
        return Err(not_an_enum());
    }
    let name = std::str::from_utf8(raw_name)
        .map_err(|_| not_an_enum())?
        .to_owned();
    let content = json.slice(key_end + 2..json.len() - 1);
    Ok((name, content))
}

/// The inverse of [`split_tagged`]: `{"<event_type>":<payload>}`.
fn join_tagged(event_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut json = Vec::with_capacity(event_type.len() + payload.len() + 8);
    json.push(b'{');
    // A type name may hold characters JSON must escape; serialising a &str cannot fail.
    serde_json::to_writer(&mut json, event_type).unwrap_or_default();
    json.push(b':');
    json.extend_from_slice(if payload.is_empty() { b"null" } else { payload });
    json.push(b'}');
    json
}

/// The variant names of `E`, if `E` deserialises as an enum: serde's derive hands them to
/// `Deserializer::deserialize_enum`, so a deserializer that only records them finds them without
/// a macro of our own.
fn variant_names<E: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut names = None;
    let _ = E::deserialize(VariantNames(&mut names));
    names
}

struct VariantNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for VariantNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not an enum"))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(variants);
        Err(serde::de::Error::custom("variant names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::position::Position;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Event {
        Opened {
            owner: String,
        },
        Deposited(u64),
        Closed,
        #[serde(rename = "odd \"name\"")]
        Odd {
            x: i32,
        },
    }

    fn recorded(encoded: &EncodedEvent) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("account-1").unwrap(),
            revision: 4,
            position: Position::new(1, 1),
            id: uuid::Uuid::nil(),
            event_type: encoded.event_type.clone(),
            payload: encoded.payload.clone(),
            content_type: encoded.content_type,
            metadata: Metadata {
                schema_version: Some(encoded.schema_version),
                ..Metadata::default()
            },
            recorded_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn every_variant_shape_round_trips_with_its_name_as_type() {
        let codec = JsonCodec::<Event>::new();
        let cases = [
            (
                Event::Opened {
                    owner: "ada".into(),
                },
                "Opened",
                r#"{"owner":"ada"}"#,
            ),
            (Event::Deposited(5), "Deposited", "5"),
            (Event::Closed, "Closed", "null"),
            (Event::Odd { x: 1 }, "odd \"name\"", r#"{"x":1}"#),
        ];
        for (event, event_type, payload) in cases {
            let encoded = codec.encode(&event).unwrap();
            assert_eq!(encoded.event_type, event_type);
            assert_eq!(encoded.payload, payload.as_bytes());
            assert_eq!(codec.decode(&recorded(&encoded)).unwrap(), event);
        }
    }

    #[test]
    fn unknown_type_is_a_typed_error_naming_stream_revision_and_type() {
        let codec = JsonCodec::<Event>::new();
        let mut event = recorded(&codec.encode(&Event::Closed).unwrap());
        event.event_type = "Frozen".into();
        let error = codec.decode(&event).unwrap_err();
        assert_eq!(
            error,
            CodecError::UnknownEventType {
                stream: StreamId::new("account-1").unwrap(),
                revision: 4,
                event_type: "Frozen".into()
            }
        );
        assert_eq!(
            error.to_string(),
            r#"stream account-1 revision 4: unknown event type "Frozen""#
        );
    }

    #[test]
    fn undecodable_payload_is_a_typed_error() {
        let codec = JsonCodec::<Event>::new();
        let mut event = recorded(&codec.encode(&Event::Deposited(1)).unwrap());
        for bad in [&b"\"five\""[..], b"{not json", b""] {
            event.payload = Bytes::copy_from_slice(bad);
            assert!(
                matches!(
                    codec.decode(&event),
                    Err(CodecError::Undecodable { revision: 4, .. })
                ),
                "{bad:?}"
            );
        }
        event.content_type = ContentType::Binary;
        assert!(matches!(
            codec.decode(&event),
            Err(CodecError::Undecodable { .. })
        ));
    }

    #[test]
    fn non_enum_events_are_refused_on_encode() {
        let codec = JsonCodec::<u64>::new();
        assert!(matches!(
            codec.encode(&5),
            Err(CodecError::Unencodable { .. })
        ));
        #[derive(Serialize, Deserialize)]
        struct Plain {
            a: u8,
        }
        let codec = JsonCodec::<Plain>::new();
        assert!(matches!(
            codec.encode(&Plain { a: 1 }),
            Err(CodecError::Unencodable { .. })
        ));
    }

    #[test]
    fn upcasters_chain_from_the_stored_version_to_the_current_one() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum V3 {
            Opened {
                owner: String,
                currency: String,
                limit: u64,
            },
        }
        let codec = JsonCodec::<V3>::new()
            .with_upcaster("Opened", 2, |mut p| {
                p["limit"] = json!(0);
                p
            })
            .with_upcaster("Opened", 1, |mut p| {
                p["currency"] = json!("EUR");
                p
            });
        assert_eq!(codec.current_version("Opened"), 3);
        let v1 = EncodedEvent {
            event_type: "Opened".into(),
            payload: Bytes::from_static(br#"{"owner":"ada"}"#),
            content_type: ContentType::Json,
            schema_version: 1,
        };
        let expected = V3::Opened {
            owner: "ada".into(),
            currency: "EUR".into(),
            limit: 0,
        };
        assert_eq!(codec.decode(&recorded(&v1)).unwrap(), expected);
        // A new event is written at the current version and needs no upcasting.
        let encoded = codec.encode(&expected).unwrap();
        assert_eq!(encoded.schema_version, 3);
        assert_eq!(codec.decode(&recorded(&encoded)).unwrap(), expected);
    }
}

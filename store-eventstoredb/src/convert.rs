//! Events between decider and the `kurrentdb` client: payloads keep their bytes and content
//! type, metadata travels as the event's JSON custom metadata, positions are `(commit,
//! prepare)`, revisions are the server's 0-based stream revisions.

use std::time::SystemTime;

use decider_core::{
    ContentType, EventData, EventFilter, Metadata, Position, RecordedEvent, StoreError, StreamId,
};
use kurrentdb::SubscriptionFilter;

/// An event on its way to the server.
pub(crate) fn to_event_data(event: &EventData) -> Result<kurrentdb::EventData, StoreError> {
    let data = match event.content_type {
        ContentType::Json => {
            // The client marks an event as JSON only through `EventData::json`, which serialises
            // a value: a raw JSON value keeps the payload's bytes exactly.
            let text = std::str::from_utf8(&event.payload).map_err(|_| invalid_json(event))?;
            let raw = serde_json::value::RawValue::from_string(text.to_owned())
                .map_err(|_| invalid_json(event))?;
            kurrentdb::EventData::json(&event.event_type, &raw).map_err(|_| invalid_json(event))?
        }
        ContentType::Binary => {
            kurrentdb::EventData::binary(&event.event_type, event.payload.clone())
        }
    };
    let metadata = serde_json::to_vec(&event.metadata).map_err(|error| {
        StoreError::InvalidInput(format!("event {}: metadata: {error}", event.id))
    })?;
    Ok(data.id(event.id).metadata(metadata.into()))
}

fn invalid_json(event: &EventData) -> StoreError {
    StoreError::InvalidInput(format!(
        "event {} ({}) is marked JSON but its payload is not a JSON document",
        event.id, event.event_type
    ))
}

/// An event read from the server.
pub(crate) fn from_resolved(
    resolved: &kurrentdb::ResolvedEvent,
) -> Result<RecordedEvent, StoreError> {
    let event = resolved.get_original_event();
    let stream = StreamId::new(event.stream_id()).map_err(|error| {
        StoreError::backend_caused_by(
            format!("EventStoreDB returned an event of an invalid stream id: {error}"),
            error,
        )
    })?;
    Ok(RecordedEvent {
        revision: event.revision,
        position: Position::new(event.position.commit, event.position.prepare),
        id: event.id,
        event_type: event.event_type.clone(),
        payload: event.data.clone(),
        content_type: if event.is_json {
            ContentType::Json
        } else {
            ContentType::Binary
        },
        metadata: metadata(&stream, event.revision, &event.custom_metadata),
        recorded_at: SystemTime::from(event.created),
        stream,
    })
}

/// The custom metadata as [`Metadata`]; an event written by another tool may carry metadata of
/// another shape, which is reported and read as empty rather than failing every reader.
fn metadata(stream: &StreamId, revision: u64, bytes: &[u8]) -> Metadata {
    if bytes.is_empty() {
        return Metadata::default();
    }
    serde_json::from_slice(bytes).unwrap_or_else(|error| {
        tracing::warn!(%stream, revision, %error, "event metadata is not decider metadata; read as empty");
        Metadata::default()
    })
}

/// The server-side part of a filter: prefixes that pass at least what `filter` passes (the event
/// types themselves, or the categories, which are prefixes of their streams' ids). The adapter
/// applies the exact filter to what comes back, so a prefix that passes more costs only
/// bandwidth. `None`: no server-side filter.
pub(crate) fn server_filter(filter: &EventFilter) -> Option<SubscriptionFilter> {
    if !filter.event_types.is_empty() {
        let server = SubscriptionFilter::on_event_type();
        Some(
            filter
                .event_types
                .iter()
                .fold(server, |server, event_type| server.add_prefix(event_type)),
        )
    } else if !filter.categories.is_empty() {
        let server = SubscriptionFilter::on_stream_name();
        Some(
            filter
                .categories
                .iter()
                .fold(server, |server, category| server.add_prefix(category)),
        )
    } else {
        None
    }
}

/// Whether a `$all` read or subscription returns `event`: the server's own events (streams
/// starting with `$`) never, the user's when they pass `filter`.
pub(crate) fn passes(filter: &EventFilter, event: &RecordedEvent) -> bool {
    !event.stream.as_str().starts_with('$') && filter.matches(&event.stream, &event.event_type)
}

/// Our position as the client's.
pub(crate) fn to_client_position(position: Position) -> kurrentdb::Position {
    kurrentdb::Position {
        commit: position.commit(),
        prepare: position.prepare(),
    }
}

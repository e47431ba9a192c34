//! The log itself: every event in global order, an index per stream and per event id, and the
//! append rules of the contract (expected version, idempotent re-append, all or nothing).

use std::collections::HashMap;
use std::time::SystemTime;

use decider_core::dcb::AppendCondition;
use decider_core::{
    AppendResult, EventData, ExpectedVersion, Position, RecordedEvent, StoreError, StreamId,
};
use uuid::Uuid;

/// Every event of the store. The event at index `i` has global position `(i + 1, i + 1)`.
#[derive(Debug, Default)]
pub(crate) struct Log {
    events: Vec<RecordedEvent>,
    /// Global indices of each stream's events, by revision.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Global index of each event id.
    ids: HashMap<Uuid, usize>,
    /// Length of each append, by the global index of its first event.
    appends: HashMap<usize, usize>,
}

/// The position of the event at global index `index`.
pub(crate) fn position_of(index: usize) -> Position {
    let n = index as u64 + 1;
    Position::new(n, n)
}

/// The global index of the first event after `after`.
pub(crate) fn index_after(after: Option<Position>) -> usize {
    after.map_or(0, |p| usize::try_from(p.commit()).unwrap_or(usize::MAX))
}

impl Log {
    pub(crate) fn len(&self) -> u64 {
        self.events.len() as u64
    }

    pub(crate) fn event(&self, index: usize) -> Option<&RecordedEvent> {
        self.events.get(index)
    }

    /// Global indices of `stream`'s events, by revision; empty for a stream that does not exist.
    pub(crate) fn stream(&self, stream: &StreamId) -> &[usize] {
        self.streams.get(stream).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        now: SystemTime,
    ) -> Result<AppendResult, StoreError> {
        decider_core::check_append(stream, &events)?;
        // An idempotent retry is recognised before the version check: after a lost reply the
        // stream has moved past `expected` because of this very batch.
        if let Some(original) = self.earlier_append(stream, &events)? {
            return Ok(original);
        }
        let revisions = self.streams.entry(stream.clone()).or_default();
        let last = revisions.len().checked_sub(1).map(|r| r as u64);
        if !expected.is_met_by(last) {
            if revisions.is_empty() {
                self.streams.remove(stream);
            }
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: last,
            });
        }
        self.appends.insert(self.events.len(), events.len());
        for event in events {
            let index = self.events.len();
            self.ids.insert(event.id, index);
            self.events.push(RecordedEvent {
                stream: stream.clone(),
                revision: revisions.len() as u64,
                position: position_of(index),
                id: event.id,
                event_type: event.event_type,
                payload: event.payload,
                content_type: event.content_type,
                metadata: event.metadata,
                recorded_at: now,
            });
            revisions.push(index);
        }
        Ok(AppendResult {
            next_revision: revisions.len() as u64,
            position: position_of(self.events.len() - 1),
            repeated: false,
        })
    }

    /// [`append`](Self::append) if nothing matching `condition`'s query was appended after
    /// its position. The log is one writer at a time, so the check and the append are atomic.
    pub(crate) fn append_if(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: &AppendCondition,
        now: SystemTime,
    ) -> Result<AppendResult, StoreError> {
        decider_core::check_append(stream, &events)?;
        // A repeat's own events match the query now: it is recognised first.
        if let Some(original) = self.earlier_append(stream, &events)? {
            return Ok(original);
        }
        let last = self.stream(stream).len().checked_sub(1).map(|r| r as u64);
        if !expected.is_met_by(last) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: last,
            });
        }
        let query = &condition.fail_if_events_match;
        if let Some(matched) = self.events[index_after(condition.after).min(self.events.len())..]
            .iter()
            .find(|e| query.matches(&e.event_type, &e.metadata.tags))
        {
            return Err(StoreError::ConditionFailed {
                after: condition.after,
                matched: matched.position,
                stream: matched.stream.clone(),
                event_type: matched.event_type.clone(),
            });
        }
        self.append(stream, expected, events, now)
    }

    /// The result of the earlier append of exactly `events` (the same ids, in the same order, as
    /// one append to `stream`); an error if some of the ids were appended otherwise.
    fn earlier_append(
        &self,
        stream: &StreamId,
        events: &[EventData],
    ) -> Result<Option<AppendResult>, StoreError> {
        let found: Vec<Option<usize>> = events
            .iter()
            .map(|e| self.ids.get(&e.id).copied())
            .collect();
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        // One append's events are consecutive in the global log, so the batch is that append
        // when it starts where the append started, has its length, and runs on in order.
        let first = found[0];
        let repeat = first.is_some_and(|start| {
            self.appends.get(&start) == Some(&events.len())
                && self.events[start].stream == *stream
                && found
                    .iter()
                    .enumerate()
                    .all(|(i, index)| *index == Some(start + i))
        });
        match (repeat, first) {
            (true, Some(start)) => {
                let last = &self.events[start + events.len() - 1];
                Ok(Some(AppendResult {
                    next_revision: last.revision + 1,
                    position: last.position,
                    repeated: true,
                }))
            }
            _ => Err(StoreError::InvalidInput(format!(
                "append to {stream} reuses event ids of an earlier append but is not that \
                 append repeated (event ids must be unique)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u128) -> EventData {
        EventData::json("E", "{}").with_id(Uuid::from_u128(id))
    }

    #[test]
    fn refused_append_to_a_new_stream_leaves_no_empty_stream_behind() {
        let mut log = Log::default();
        let s = StreamId::new("s").unwrap();
        let refused = log.append(
            &s,
            ExpectedVersion::Exact(0),
            vec![event(1)],
            SystemTime::UNIX_EPOCH,
        );
        assert!(matches!(
            refused,
            Err(StoreError::WrongExpectedVersion { actual: None, .. })
        ));
        assert!(log.streams.is_empty());
        // And the stream still counts as absent for NoStream.
        log.append(
            &s,
            ExpectedVersion::NoStream,
            vec![event(1)],
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    }

    #[test]
    fn a_repeated_batch_returns_the_original_result_even_with_a_stale_expectation() {
        let mut log = Log::default();
        let s = StreamId::new("s").unwrap();
        let batch = vec![event(1), event(2)];
        let first = log
            .append(
                &s,
                ExpectedVersion::NoStream,
                batch.clone(),
                SystemTime::UNIX_EPOCH,
            )
            .unwrap();
        log.append(
            &s,
            ExpectedVersion::Any,
            vec![event(3)],
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        let again = log
            .append(&s, ExpectedVersion::NoStream, batch, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(
            again,
            AppendResult {
                repeated: true,
                ..first
            }
        );
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn a_batch_mixing_old_and_new_ids_is_refused() {
        let mut log = Log::default();
        let s = StreamId::new("s").unwrap();
        log.append(
            &s,
            ExpectedVersion::Any,
            vec![event(1)],
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        for batch in [vec![event(1), event(2)], vec![event(2), event(1)]] {
            assert!(matches!(
                log.append(&s, ExpectedVersion::Any, batch, SystemTime::UNIX_EPOCH),
                Err(StoreError::InvalidInput(_))
            ));
        }
        let other = StreamId::new("other").unwrap();
        assert!(matches!(
            log.append(
                &other,
                ExpectedVersion::Any,
                vec![event(1)],
                SystemTime::UNIX_EPOCH
            ),
            Err(StoreError::InvalidInput(_))
        ));
        assert_eq!(log.len(), 1);
    }
}

//! The double's transaction log: one global sequence of records in commit order, an index per
//! stream, and the server's rules for expected versions and idempotent re-appends. Pure data; the
//! gRPC layer in `service.rs` translates to and from it.
//!
//! The rules follow the server's documented behaviour (and its `IndexWriter.CheckCommit`):
//! - an expected revision equal to the stream's last revision (`-1` for no stream) writes;
//! - an expected revision *below* it is checked for idempotency: when the proposed ids are exactly
//!   the ids at the revisions that follow the expectation, the append succeeds without writing
//!   and without a position; when the first id differs it is a wrong expected version, and when
//!   a later one differs ("corrupted idempotency") it is a wrong expected version too;
//! - an expected revision *above* it is a wrong expected version;
//! - `Any` (and `StreamExists` on an existing stream) looks the first id up among the events
//!   written so far: not found, or found in another stream, writes; found in this stream, every
//!   id must be there too (idempotent success) or it is a wrong expected version. The real server
//!   keeps a bounded cache of recent ids for this; the double remembers every id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use uuid::Uuid;

/// Where the first record is written: the real server's log starts with its own records, so a
/// user event never sits at position 0 (the client reports "no position" as 0/0).
const FIRST_POSITION: u64 = 4096;

/// Bytes of a record beside its data and metadata, so positions grow like log offsets and are
/// not consecutive integers (an adapter must never compute a neighbour position).
const RECORD_OVERHEAD: u64 = 96;

/// One event in the log.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) stream: Bytes,
    pub(crate) revision: u64,
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) content_type: String,
    pub(crate) custom_metadata: Bytes,
    pub(crate) data: Bytes,
    /// Its log offset: the commit and the prepare position are both this offset.
    pub(crate) position: u64,
    /// When it was written, in .NET ticks (100 ns) since the Unix epoch, as the server reports.
    pub(crate) created_ticks: u64,
}

/// An event proposed by an append.
#[derive(Debug)]
pub(crate) struct Proposed {
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) content_type: String,
    pub(crate) custom_metadata: Bytes,
    pub(crate) data: Bytes,
}

/// What an append expects, after the server's conversion of the request to its signed revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    Any,
    NoStream,
    StreamExists,
    Revision(u64),
}

/// How the log answered an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The events were written; the last one has this revision and position.
    Written { last_revision: u64, position: u64 },
    /// The events were already there (an idempotent retry); nothing was written.
    Idempotent { last_revision: u64 },
    /// The expectation did not hold; `current` is the stream's last revision.
    WrongExpectedVersion { current: Option<u64> },
}

/// The log.
#[derive(Debug, Default)]
pub(crate) struct Log {
    records: Vec<Arc<Record>>,
    /// Indexes into `records`, per stream, in revision order.
    streams: HashMap<Bytes, Vec<usize>>,
    /// Every id written, with the index of its record.
    ids: HashMap<Uuid, usize>,
}

impl Log {
    /// The number of records: the index the next one will get.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The record at `index` of the global log.
    pub(crate) fn get(&self, index: usize) -> Option<&Arc<Record>> {
        self.records.get(index)
    }

    /// The index of the first record at or after `position`.
    pub(crate) fn index_at_or_after(&self, position: u64) -> usize {
        self.records
            .partition_point(|record| record.position < position)
    }

    /// The index of the first record after `position`.
    pub(crate) fn index_after(&self, position: u64) -> usize {
        self.records
            .partition_point(|record| record.position <= position)
    }

    /// The global indexes of a stream's records, in revision order (empty: no stream).
    pub(crate) fn stream(&self, stream: &[u8]) -> &[usize] {
        self.streams.get(stream).map_or(&[], Vec::as_slice)
    }

    /// The last revision of `stream` (`None`: no stream).
    pub(crate) fn last_revision(&self, stream: &[u8]) -> Option<u64> {
        (self.stream(stream).len() as u64).checked_sub(1)
    }

    /// The position of the newest record.
    pub(crate) fn head(&self) -> Option<u64> {
        self.records.last().map(|record| record.position)
    }

    /// Appends `proposed` to `stream` if `expected` holds, by the server's rules (module docs).
    pub(crate) fn append(
        &mut self,
        stream: &Bytes,
        expected: Expected,
        proposed: Vec<Proposed>,
    ) -> AppendOutcome {
        let current = self.last_revision(stream);
        let wrong = AppendOutcome::WrongExpectedVersion { current };
        match expected {
            Expected::StreamExists if current.is_none() => wrong,
            Expected::Any | Expected::StreamExists => {
                match self.repeated_anywhere(stream, &proposed) {
                    Repeat::New => self.write(stream, current, proposed),
                    Repeat::Whole { last_revision } => AppendOutcome::Idempotent { last_revision },
                    Repeat::Partial => wrong,
                }
            }
            Expected::NoStream => self.check_revision(stream, None, current, proposed),
            Expected::Revision(revision) => {
                self.check_revision(stream, Some(revision), current, proposed)
            }
        }
    }

    /// An explicit expectation (`None`: no stream, the server's `-1`).
    fn check_revision(
        &mut self,
        stream: &Bytes,
        expected: Option<u64>,
        current: Option<u64>,
        proposed: Vec<Proposed>,
    ) -> AppendOutcome {
        // Compare as the server does, with "no stream" as -1.
        let signed = |revision: Option<u64>| revision.map_or(-1, i128::from);
        let (expected_signed, current_signed) = (signed(expected), signed(current));
        if expected_signed == current_signed {
            return self.write(stream, current, proposed);
        }
        if expected_signed > current_signed {
            return AppendOutcome::WrongExpectedVersion { current };
        }
        // Below the stream's last revision: the proposed ids must be those that follow it.
        let first = expected.map_or(0, |revision| revision + 1);
        let indexes = self.stream(stream);
        for (offset, event) in proposed.iter().enumerate() {
            let revision = first + offset as u64;
            let matches = usize::try_from(revision)
                .ok()
                .and_then(|revision| indexes.get(revision))
                .is_some_and(|&index| self.records[index].id == event.id);
            if !matches {
                // A first mismatch is a plain conflict, a later one "corrupted idempotency";
                // the server answers both with a wrong expected version.
                return AppendOutcome::WrongExpectedVersion { current };
            }
        }
        match proposed.len() {
            0 => AppendOutcome::WrongExpectedVersion { current },
            count => AppendOutcome::Idempotent {
                last_revision: first + count as u64 - 1,
            },
        }
    }

    /// How the ids of an `Any` append relate to what this stream holds.
    fn repeated_anywhere(&self, stream: &Bytes, proposed: &[Proposed]) -> Repeat {
        let in_this_stream = |event: &Proposed| {
            self.ids
                .get(&event.id)
                .map(|&index| &self.records[index])
                .filter(|record| record.stream == stream)
                .map(|record| record.revision)
        };
        let Some(first) = proposed.first() else {
            return Repeat::New;
        };
        if in_this_stream(first).is_none() {
            return Repeat::New;
        }
        let mut last_revision = 0;
        for event in proposed {
            match in_this_stream(event) {
                Some(revision) => last_revision = revision,
                None => return Repeat::Partial,
            }
        }
        Repeat::Whole { last_revision }
    }

    // The revision and the position advance together, one event at a time.
    #[allow(clippy::explicit_counter_loop)]
    fn write(
        &mut self,
        stream: &Bytes,
        current: Option<u64>,
        proposed: Vec<Proposed>,
    ) -> AppendOutcome {
        let created_ticks = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos() / 100).unwrap_or(u64::MAX)
            });
        let mut next_revision = current.map_or(0, |revision| revision + 1);
        let mut position = self.next_position();
        let mut outcome = AppendOutcome::WrongExpectedVersion { current };
        for event in proposed {
            let size =
                RECORD_OVERHEAD + event.data.len() as u64 + event.custom_metadata.len() as u64;
            let record = Record {
                stream: stream.clone(),
                revision: next_revision,
                id: event.id,
                event_type: event.event_type,
                content_type: event.content_type,
                custom_metadata: event.custom_metadata,
                data: event.data,
                position,
                created_ticks,
            };
            let index = self.records.len();
            self.records.push(Arc::new(record));
            self.streams.entry(stream.clone()).or_default().push(index);
            // The first record of an id is the one idempotency checks find.
            self.ids.entry(event.id).or_insert(index);
            outcome = AppendOutcome::Written {
                last_revision: next_revision,
                position,
            };
            next_revision += 1;
            position += size;
        }
        outcome
    }

    fn next_position(&self) -> u64 {
        self.records.last().map_or(FIRST_POSITION, |record| {
            record.position
                + RECORD_OVERHEAD
                + record.data.len() as u64
                + record.custom_metadata.len() as u64
        })
    }
}

enum Repeat {
    New,
    Whole { last_revision: u64 },
    Partial,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn proposed(ids: &[Uuid]) -> Vec<Proposed> {
        ids.iter()
            .map(|&id| Proposed {
                id,
                event_type: "Happened".into(),
                content_type: "application/json".into(),
                custom_metadata: Bytes::new(),
                data: Bytes::from_static(b"{}"),
            })
            .collect()
    }

    #[test]
    fn the_server_rules_for_expected_versions_and_repeats() {
        let mut log = Log::default();
        let stream = Bytes::from_static(b"s-1");
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let written = log.append(&stream, Expected::NoStream, proposed(&[a, b]));
        assert!(matches!(
            written,
            AppendOutcome::Written {
                last_revision: 1,
                ..
            }
        ));
        // A stale expectation with the same ids: idempotent.
        assert_eq!(
            log.append(&stream, Expected::NoStream, proposed(&[a, b])),
            AppendOutcome::Idempotent { last_revision: 1 }
        );
        // Any with the first id known in this stream: idempotent; partly known: a conflict.
        assert_eq!(
            log.append(&stream, Expected::Any, proposed(&[a, b])),
            AppendOutcome::Idempotent { last_revision: 1 }
        );
        assert_eq!(
            log.append(&stream, Expected::Any, proposed(&[a, c])),
            AppendOutcome::WrongExpectedVersion { current: Some(1) }
        );
        // The current revision writes, even ids the stream already holds (as the server does).
        assert!(matches!(
            log.append(&stream, Expected::Revision(1), proposed(&[a])),
            AppendOutcome::Written {
                last_revision: 2,
                ..
            }
        ));
        assert_eq!(
            log.append(&stream, Expected::Revision(7), proposed(&[c])),
            AppendOutcome::WrongExpectedVersion { current: Some(2) }
        );
        assert!(log.get(0).unwrap().position < log.get(1).unwrap().position);
        assert_eq!(log.index_after(log.get(0).unwrap().position), 1);
    }
}

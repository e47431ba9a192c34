//! The subcommands, generic over the store so that each store gets the same behaviour.

use std::io::{IsTerminal, Write};

use decider_core::projection::DeadLetterStore;
use decider_core::{
    Direction, EventFilter, EventStore, Position, StoreCatalog, StreamFrom, StreamId,
    SubscriptionMessage,
};
use futures::{StreamExt, pin_mut};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;
use crate::render;

/// Where `tail` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum From {
    /// The first event of the log.
    Start,
    /// After the last event committed when the command starts: only new events.
    End,
    /// After this position.
    After(Position),
}

impl std::str::FromStr for From {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "start" => Ok(Self::Start),
            "end" => Ok(Self::End),
            position => position
                .parse()
                .map(Self::After)
                .map_err(|e| format!("{e}; or `start` (the whole log) or `end` (new events only)")),
        }
    }
}

/// `streams`: streams with their event counts and last revisions.
pub(crate) async fn streams<S: StoreCatalog>(
    store: &S,
    prefix: &str,
    limit: u64,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let streams = store.list_streams(prefix, limit).await?;
    if streams.is_empty() {
        let scope = if prefix.is_empty() {
            String::new()
        } else {
            format!(" whose id starts with {prefix:?}")
        };
        writeln!(out, "no streams{scope}")?;
        return Ok(());
    }
    let mut rows = vec![vec![
        "STREAM".to_owned(),
        "EVENTS".to_owned(),
        "LAST_REVISION".to_owned(),
    ]];
    rows.extend(streams.iter().map(|s| {
        vec![
            s.stream.to_string(),
            s.events.to_string(),
            s.last_revision.to_string(),
        ]
    }));
    out.write_all(render::table(&rows).as_bytes())?;
    if streams.len() as u64 == limit {
        writeln!(out, "(first {limit} shown; raise --limit for more)")?;
    }
    Ok(())
}

/// `read <stream>`: the stream's events, oldest first.
pub(crate) async fn read<S: EventStore>(
    store: &S,
    stream: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let stream = StreamId::new(stream).map_err(|e| CliError::Usage(e.to_string()))?;
    let last = store.read_stream(&stream, StreamFrom::End, Direction::Backward, Some(1));
    pin_mut!(last);
    let Some(last) = last.next().await.transpose()? else {
        return Err(CliError::Usage(format!(
            "stream {stream} has no events (`decider streams` lists the streams)"
        )));
    };
    let progress = progress_bar(last.revision + 1);
    if !json {
        progress.suspend(|| writeln!(out, "{}", render::EVENT_HEADER))?;
    }
    let events = store.read_stream(&stream, StreamFrom::Start, Direction::Forward, None);
    pin_mut!(events);
    while let Some(event) = events.next().await.transpose()? {
        let line = if json {
            render::event_json(&event)
        } else {
            render::event_row(&event)
        };
        progress.suspend(|| writeln!(out, "{line}"))?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(())
}

/// A bar on stderr with events/s and ETA when stderr is a terminal; hidden otherwise (the
/// plain lines on stdout are then all there is).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// `tail`: the global log, then new events as they are committed, until `limit` events (or
/// for ever).
pub(crate) async fn tail<S: EventStore>(
    store: &S,
    from: From,
    types: Vec<String>,
    stream_prefix: &str,
    limit: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let after = match from {
        From::Start => None,
        From::End => store.head_position().await?,
        From::After(position) => Some(position),
    };
    let filter = EventFilter::all().with_event_types(types);
    let subscription = store.subscribe_all(after, &filter);
    pin_mut!(subscription);
    if !json {
        writeln!(out, "{}", render::EVENT_HEADER)?;
        out.flush()?;
    }
    let mut shown = 0;
    while limit.is_none_or(|limit| shown < limit) {
        let Some(message) = subscription.next().await.transpose()? else {
            break;
        };
        let SubscriptionMessage::Event(event) = message else {
            continue;
        };
        // The store filters by type; a stream prefix is no store filter, so it is applied here.
        if !event.stream.as_str().starts_with(stream_prefix) {
            continue;
        }
        let line = if json {
            render::event_json(&event)
        } else {
            render::event_row(&event)
        };
        writeln!(out, "{line}")?;
        // Followers (`| grep`, a test) see each event when it arrives, not at exit.
        out.flush()?;
        shown += 1;
    }
    Ok(())
}

/// `dead-letters list <projection>`: the events a projection gave up on.
pub(crate) async fn dead_letters<D: DeadLetterStore>(
    letters: &D,
    projection: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let letters = letters.list(projection).await?;
    if letters.is_empty() {
        writeln!(out, "no dead letters for projection {projection:?}")?;
        return Ok(());
    }
    let mut rows = vec![
        [
            "STREAM",
            "REVISION",
            "POSITION",
            "EVENT_ID",
            "FAILED_AT",
            "REASON",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(letters.iter().map(|letter| {
        vec![
            letter.stream.to_string(),
            letter.revision.to_string(),
            letter.position.to_string(),
            letter.event_id.to_string(),
            render::timestamp(letter.failed_at),
            letter.reason.clone(),
        ]
    }));
    out.write_all(render::table(&rows).as_bytes())?;
    Ok(())
}

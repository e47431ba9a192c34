//! How events, streams and dead letters are written: plain text rows or JSON lines. Pure, so
//! the formats are tested without a store.

use std::time::{SystemTime, UNIX_EPOCH};

use decider_core::{ContentType, RecordedEvent};
use serde_json::{Value, json};

/// `time` as RFC 3339 UTC with milliseconds (`2026-12-02T13:27:30.123Z`).
pub(crate) fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The payload as text: JSON as stored, bytes as their count.
fn payload_text(event: &RecordedEvent) -> String {
    match event.content_type {
        ContentType::Json => String::from_utf8_lossy(&event.payload).into_owned(),
        ContentType::Binary => format!("<{} bytes>", event.payload.len()),
    }
}

/// The metadata as compact JSON (`{}` when empty).
fn metadata_value(event: &RecordedEvent) -> Value {
    serde_json::to_value(&event.metadata).unwrap_or(Value::Null)
}

/// The header of [`event_row`].
pub(crate) const EVENT_HEADER: &str =
    "STREAM\tREVISION\tPOSITION\tTYPE\tRECORDED_AT\tMETADATA\tPAYLOAD";

/// One event as a tab-separated row under [`EVENT_HEADER`].
pub(crate) fn event_row(event: &RecordedEvent) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        event.stream,
        event.revision,
        event.position,
        event.event_type,
        timestamp(event.recorded_at),
        metadata_value(event),
        payload_text(event)
    )
}

/// One event as a JSON object (one line). A JSON payload is embedded as JSON; bytes as hex.
pub(crate) fn event_json(event: &RecordedEvent) -> String {
    let mut object = json!({
        "stream": event.stream.as_str(),
        "revision": event.revision,
        "position": event.position.to_string(),
        "id": event.id.to_string(),
        "type": event.event_type,
        "recorded_at": timestamp(event.recorded_at),
        "metadata": metadata_value(event),
    });
    let payload = match event.content_type {
        ContentType::Json => serde_json::from_slice(&event.payload)
            .map(|value| ("payload", value))
            .unwrap_or_else(|_| ("payload_text", Value::String(payload_text(event)))),
        ContentType::Binary => {
            let hex: String = event.payload.iter().map(|b| format!("{b:02x}")).collect();
            ("payload_hex", Value::String(hex))
        }
    };
    object[payload.0] = payload.1;
    object.to_string()
}

/// Rows padded into aligned columns (two spaces apart); the last column is not padded.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let later = UNIX_EPOCH + Duration::from_millis(1_796_218_050_123);
        assert_eq!(timestamp(later), "2026-12-02T13:27:30.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["STREAM".to_owned(), "EVENTS".to_owned()],
            vec!["account-ada".to_owned(), "3".to_owned()],
        ];
        assert_eq!(table(&rows), "STREAM       EVENTS\naccount-ada  3\n");
    }
}

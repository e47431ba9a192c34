//! The projection control plane in the store's file: runners' reports in `projection_runners`,
//! operators' requests in `projection_requests` (schema version 2). Writes go through the
//! writer thread, like every write; a runner reports once per status interval.

use std::time::{Duration, SystemTime};

use decider_core::projection::{
    ControlAction, ControlRequest, ProjectionControl, RequestDone, RunnerReport,
};
use decider_core::{Position, StoreError};
use rusqlite::{OptionalExtension, Row, params};

use crate::error::store_error;
use crate::writer::micros_since_epoch;
use crate::{SqliteStore, sql};

/// How long a runner that stopped reporting is remembered.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

impl SqliteStore {
    /// The control plane in this file, for
    /// [`ProjectionRunner::with_control`](decider_core::projection::ProjectionRunner::with_control)
    /// and for the `decider` CLI.
    pub fn control(&self) -> SqliteControl {
        SqliteControl(self.clone())
    }
}

/// Runners' reports and operators' requests in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteControl(SqliteStore);

fn time_of(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn split(position: Option<Position>) -> (Option<i64>, Option<i64>) {
    match position {
        Some(p) => (Some(p.commit() as i64), Some(p.prepare() as i64)),
        None => (None, None),
    }
}

fn join(commit: Option<i64>, prepare: Option<i64>) -> Option<Position> {
    Some(Position::new(commit? as u64, prepare? as u64))
}

/// A stored name the code does not know is the file's fault, not the query's.
fn parsed<T: std::str::FromStr<Err = StoreError>>(text: String) -> rusqlite::Result<T> {
    text.parse().map_err(|error: StoreError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

fn report_of(row: &Row<'_>) -> rusqlite::Result<RunnerReport> {
    Ok(RunnerReport {
        projection: row.get(0)?,
        runner: row.get(1)?,
        state: parsed(row.get(2)?)?,
        error: row.get(3)?,
        checkpoint: join(row.get(4)?, row.get(5)?),
        head: join(row.get(6)?, row.get(7)?),
        lag: row.get::<_, Option<i64>>(8)?.map(|lag| lag as u64),
        events_per_second: row.get(9)?,
        interval: Duration::from_millis(row.get::<_, i64>(10)? as u64),
        reported_at: time_of(row.get(11)?),
    })
}

fn request_of(row: &Row<'_>) -> rusqlite::Result<ControlRequest> {
    let done = match row.get::<_, Option<i64>>(4)? {
        None => None,
        Some(at) => {
            let result = row.get::<_, Option<String>>(7)?.unwrap_or_default();
            Some(RequestDone {
                at: time_of(at),
                by: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                result: if row.get::<_, Option<bool>>(6)?.unwrap_or(false) {
                    Ok(result)
                } else {
                    Err(result)
                },
            })
        }
    };
    Ok(ControlRequest {
        id: row.get::<_, i64>(0)? as u64,
        projection: row.get(1)?,
        action: parsed(row.get(2)?)?,
        requested_at: time_of(row.get(3)?),
        done,
    })
}

impl ProjectionControl for SqliteControl {
    async fn report(&self, report: &RunnerReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.0
            .write(move |connection| {
                let (checkpoint_commit, checkpoint_prepare) = split(report.checkpoint);
                let (head_commit, head_prepare) = split(report.head);
                let reported_at = micros_since_epoch(report.reported_at);
                let transaction = connection.transaction().map_err(store_error)?;
                transaction
                    .prepare_cached(sql::REPORT)
                    .and_then(|mut statement| {
                        statement.execute(params![
                            report.projection,
                            report.runner,
                            report.state.as_str(),
                            report.error,
                            checkpoint_commit,
                            checkpoint_prepare,
                            head_commit,
                            head_prepare,
                            report.lag.map(|lag| i64::try_from(lag).unwrap_or(i64::MAX)),
                            report.events_per_second,
                            i64::try_from(report.interval.as_millis()).unwrap_or(i64::MAX),
                            reported_at,
                        ])
                    })
                    .map_err(store_error)?;
                let forget_before = reported_at.saturating_sub(FORGET_AFTER.as_micros() as i64);
                transaction
                    .prepare_cached(sql::FORGET_GONE_RUNNERS)
                    .and_then(|mut statement| {
                        statement.execute(params![report.projection, report.runner, forget_before])
                    })
                    .map_err(store_error)?;
                transaction.commit().map_err(store_error)
            })
            .await?
    }

    async fn reports(&self) -> Result<Vec<RunnerReport>, StoreError> {
        self.0
            .read(|connection| {
                let mut statement = connection
                    .prepare_cached(sql::REPORTS)
                    .map_err(store_error)?;
                let reports = statement
                    .query_map([], report_of)
                    .and_then(Iterator::collect)
                    .map_err(store_error)?;
                Ok(reports)
            })
            .await
    }

    async fn request(&self, projection: &str, action: ControlAction) -> Result<u64, StoreError> {
        let projection = projection.to_owned();
        self.0
            .write(move |connection| {
                connection
                    .prepare_cached(sql::REQUEST)
                    .and_then(|mut statement| {
                        statement.execute(params![
                            projection,
                            action.as_str(),
                            micros_since_epoch(SystemTime::now())
                        ])
                    })
                    .map_err(store_error)?;
                Ok(connection.last_insert_rowid() as u64)
            })
            .await?
    }

    async fn pending(&self, projection: &str) -> Result<Vec<ControlRequest>, StoreError> {
        let projection = projection.to_owned();
        self.0
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(&sql::pending_requests())
                    .map_err(store_error)?;
                let pending = statement
                    .query_map([projection], request_of)
                    .and_then(Iterator::collect)
                    .map_err(store_error)?;
                Ok(pending)
            })
            .await
    }

    async fn complete(
        &self,
        id: u64,
        runner: &str,
        result: Result<String, String>,
    ) -> Result<(), StoreError> {
        let runner = runner.to_owned();
        self.0
            .write(move |connection| {
                let succeeded = result.is_ok();
                let text = result.unwrap_or_else(|error| error);
                connection
                    .prepare_cached(sql::COMPLETE_REQUEST)
                    .and_then(|mut statement| {
                        statement.execute(params![
                            id as i64,
                            micros_since_epoch(SystemTime::now()),
                            runner,
                            succeeded,
                            text
                        ])
                    })
                    .map_err(store_error)?;
                Ok(())
            })
            .await?
    }

    async fn request_status(&self, id: u64) -> Result<Option<ControlRequest>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.0
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(&sql::request_status())
                    .map_err(store_error)?;
                statement
                    .query_row([id], request_of)
                    .optional()
                    .map_err(store_error)
            })
            .await
    }

    async fn active_version(&self, group: &str) -> Result<Option<String>, StoreError> {
        let group = group.to_owned();
        self.0
            .read(move |connection| {
                connection
                    .prepare_cached(sql::ACTIVE_VERSION)
                    .and_then(|mut statement| {
                        statement.query_row([group], |row| row.get(0)).optional()
                    })
                    .map_err(store_error)
            })
            .await
    }

    async fn switch_version(
        &self,
        group: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<bool, StoreError> {
        let (group, from, to) = (group.to_owned(), from.map(str::to_owned), to.to_owned());
        self.0
            .write(move |connection| {
                let now = micros_since_epoch(SystemTime::now());
                let changed = match from {
                    None => connection
                        .prepare_cached(sql::FIRST_SWITCH)
                        .and_then(|mut statement| statement.execute(params![group, to, now])),
                    Some(from) => connection
                        .prepare_cached(sql::SWITCH_VERSION)
                        .and_then(|mut statement| statement.execute(params![group, to, now, from])),
                }
                .map_err(store_error)?;
                Ok(changed == 1)
            })
            .await?
    }

    async fn claim_partition_count(&self, projection: &str, count: u32) -> Result<u32, StoreError> {
        let projection = projection.to_owned();
        self.0
            .write(move |connection| {
                // The writer is one connection: the insert and the read are one step.
                let now = micros_since_epoch(SystemTime::now());
                connection
                    .prepare_cached(sql::RECORD_PARTITION_COUNT)
                    .and_then(|mut statement| statement.execute(params![projection, count, now]))
                    .and_then(|_| {
                        connection
                            .prepare_cached(sql::PARTITION_COUNT)?
                            .query_row([&projection], |row| row.get(0))
                    })
                    .map_err(store_error)
            })
            .await?
    }

    async fn partition_count(&self, projection: &str) -> Result<Option<u32>, StoreError> {
        let projection = projection.to_owned();
        self.0
            .read(move |connection| {
                connection
                    .prepare_cached(sql::PARTITION_COUNT)
                    .and_then(|mut statement| {
                        statement
                            .query_row([projection], |row| row.get(0))
                            .optional()
                    })
                    .map_err(store_error)
            })
            .await
    }
}

//! The projection control plane in PostgreSQL: runners' reports in `projection_runners`,
//! operators' requests in `projection_requests` (migration 3). Statements are formatted per
//! call, like the catalog's: a runner reports and looks for requests once per status interval.

use std::time::{Duration, SystemTime};

use decider_core::StoreError;
use decider_core::projection::{
    ControlAction, ControlRequest, ProjectionControl, RequestDone, RunnerReport,
};
use tokio_postgres::Row;

use crate::PostgresStore;
use crate::error::{from_pg, from_pool};
use crate::projection::{params, position};
use crate::sql;

impl PostgresStore {
    /// The control plane in this store's schema, for
    /// [`ProjectionRunner::with_control`](decider_core::projection::ProjectionRunner::with_control)
    /// and for the `decider` CLI.
    pub fn control(&self) -> PgControl {
        PgControl(self.clone())
    }
}

/// Runners' reports and operators' requests in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgControl(PostgresStore);

impl PgControl {
    fn statement(&self, statement: &str) -> String {
        sql::in_schema(statement, &format!("\"{}\"", self.0.shared.schema))
    }

    async fn query(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        let prepared = client
            .prepare_cached(&self.statement(statement))
            .await
            .map_err(from_pg)?;
        client.query(&prepared, params).await.map_err(from_pg)
    }
}

/// A stored position, if both of its parts are there.
fn join(transaction: Option<i64>, global: Option<i64>) -> Option<decider_core::Position> {
    Some(position(transaction?, global?))
}

fn report_of(row: &Row) -> Result<RunnerReport, StoreError> {
    let state: String = row.get(2);
    Ok(RunnerReport {
        projection: row.get(0),
        runner: row.get(1),
        state: state.parse()?,
        error: row.get(3),
        checkpoint: join(row.get(4), row.get(5)),
        head: join(row.get(6), row.get(7)),
        lag: row.get::<_, Option<i64>>(8).map(|lag| lag as u64),
        events_per_second: row.get(9),
        interval: Duration::from_millis(row.get::<_, i64>(10) as u64),
        reported_at: row.get(11),
    })
}

fn request_of(row: &Row) -> Result<ControlRequest, StoreError> {
    let action: String = row.get(2);
    let done = match row.get::<_, Option<SystemTime>>(4) {
        None => None,
        Some(at) => {
            let result: String = row.get::<_, Option<String>>(7).unwrap_or_default();
            Some(RequestDone {
                at,
                by: row.get::<_, Option<String>>(5).unwrap_or_default(),
                result: if row.get::<_, Option<bool>>(6).unwrap_or(false) {
                    Ok(result)
                } else {
                    Err(result)
                },
            })
        }
    };
    Ok(ControlRequest {
        id: row.get::<_, i64>(0) as u64,
        projection: row.get(1),
        action: action.parse()?,
        requested_at: row.get(3),
        done,
    })
}

impl ProjectionControl for PgControl {
    async fn report(&self, report: &RunnerReport) -> Result<(), StoreError> {
        let (checkpoint_transaction, checkpoint_position) = params(report.checkpoint);
        let (head_transaction, head_position) = params(report.head);
        let lag = report.lag.map(|lag| i64::try_from(lag).unwrap_or(i64::MAX));
        let interval = i64::try_from(report.interval.as_millis()).unwrap_or(i64::MAX);
        self.query(
            sql::REPORT,
            &[
                &report.projection,
                &report.runner,
                &report.state.as_str(),
                &report.error,
                &checkpoint_transaction,
                &checkpoint_position,
                &head_transaction,
                &head_position,
                &lag,
                &report.events_per_second,
                &interval,
                &report.reported_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn reports(&self) -> Result<Vec<RunnerReport>, StoreError> {
        self.query(sql::REPORTS, &[])
            .await?
            .iter()
            .map(report_of)
            .collect()
    }

    async fn request(&self, projection: &str, action: ControlAction) -> Result<u64, StoreError> {
        let rows = self
            .query(sql::REQUEST, &[&projection, &action.as_str()])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::backend("INSERT … RETURNING returned no row"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn pending(&self, projection: &str) -> Result<Vec<ControlRequest>, StoreError> {
        self.query(&sql::pending_requests(), &[&projection])
            .await?
            .iter()
            .map(request_of)
            .collect()
    }

    async fn complete(
        &self,
        id: u64,
        runner: &str,
        result: Result<String, String>,
    ) -> Result<(), StoreError> {
        let succeeded = result.is_ok();
        let text = result.unwrap_or_else(|error| error);
        self.query(
            sql::COMPLETE_REQUEST,
            &[&(id as i64), &runner, &succeeded, &text],
        )
        .await?;
        Ok(())
    }

    async fn request_status(&self, id: u64) -> Result<Option<ControlRequest>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.query(&sql::request_status(), &[&id])
            .await?
            .first()
            .map(request_of)
            .transpose()
    }

    async fn active_version(&self, group: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query(sql::ACTIVE_VERSION, &[&group])
            .await?
            .first()
            .map(|row| row.get(0)))
    }

    async fn switch_version(
        &self,
        group: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<bool, StoreError> {
        let switched = match from {
            None => self.query(sql::FIRST_SWITCH, &[&group, &to]).await?,
            Some(from) => {
                self.query(sql::SWITCH_VERSION, &[&group, &to, &from])
                    .await?
            }
        };
        Ok(!switched.is_empty())
    }

    async fn claim_partition_count(&self, projection: &str, count: u32) -> Result<u32, StoreError> {
        let wanted = i32::try_from(count)
            .map_err(|_| StoreError::InvalidInput(format!("{count} partitions are too many")))?;
        self.query(sql::RECORD_PARTITION_COUNT, &[&projection, &wanted])
            .await?;
        self.partition_count(projection).await?.ok_or_else(|| {
            StoreError::backend(format!(
                "the partition count of {projection} was not recorded"
            ))
        })
    }

    async fn partition_count(&self, projection: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .query(sql::PARTITION_COUNT, &[&projection])
            .await?
            .first()
            .map(|row| row.get::<_, i32>(0) as u32))
    }
}

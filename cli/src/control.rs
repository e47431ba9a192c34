//! `projections`, `rebuild`, `dead-letters redrive`, `version` and `switch`: the operator's half of the projection
//! control plane (ADR 10). Runners report into the store and carry out what is asked there;
//! these commands read the reports, ask, and follow the request to its end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use decider_core::projection::{
    ControlAction, ControlRequest, ProjectionControl, ReportedState, RequestDone, RunnerReport,
    version_number,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;
use crate::render;

/// How often a request and the reports are looked at while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How often a pipe gets a progress line during a rebuild.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What `projections` shows of one projection: the report that tells most (an active runner's,
/// else a current one's, else the newest), and how many of its runners are current.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub(crate) report: RunnerReport,
    pub(crate) current_runners: usize,
    /// Whether `report` is current: a runner of the projection is most likely running.
    pub(crate) running: bool,
}

/// One [`Summary`] per projection, in name order, from every runner's report as of `now`.
pub(crate) fn summarise(mut reports: Vec<RunnerReport>, now: SystemTime) -> Vec<Summary> {
    reports.sort_by(|a, b| a.projection.cmp(&b.projection));
    let mut summaries: Vec<Summary> = Vec::new();
    for group in reports.chunk_by(|a, b| a.projection == b.projection) {
        let rank = |r: &RunnerReport| (r.is_current(now), r.state.is_active(), r.reported_at);
        let Some(best) = group.iter().max_by(|a, b| rank(a).cmp(&rank(b))) else {
            continue;
        };
        summaries.push(Summary {
            report: best.clone(),
            current_runners: group.iter().filter(|r| r.is_current(now)).count(),
            running: best.is_current(now),
        });
    }
    summaries
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The `projections` table.
pub(crate) fn projections_table(summaries: &[Summary]) -> String {
    let mut rows = vec![
        [
            "PROJECTION",
            "STATE",
            "CHECKPOINT",
            "HEAD",
            "LAG",
            "EVENTS/S",
            "RUNNERS",
            "REPORTED_AT",
            "DETAIL",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(summaries.iter().map(|s| {
        let r = &s.report;
        let state = if s.running {
            r.state.as_str().to_owned()
        } else {
            format!("not running (last: {})", r.state)
        };
        let detail = match (&r.error, s.running) {
            (Some(error), _) => error.clone(),
            (None, true) => format!("by {}", r.runner),
            (None, false) => format!("last seen: {}", r.runner),
        };
        vec![
            r.projection.clone(),
            state,
            or_dash(r.checkpoint),
            or_dash(r.head),
            or_dash(r.lag),
            format!("{:.0}", r.events_per_second),
            s.current_runners.to_string(),
            render::timestamp(r.reported_at),
            detail,
        ]
    }));
    render::table(&rows)
}

/// `projections`: every projection a runner has reported, with its state, checkpoint and lag.
pub(crate) async fn projections<C: ProjectionControl>(
    control: &C,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let summaries = summarise(control.reports().await?, SystemTime::now());
    if summaries.is_empty() {
        writeln!(
            out,
            "no projection has reported: runners report once started with a control plane \
             (ProjectionRunner::with_control)"
        )?;
        return Ok(());
    }
    out.write_all(projections_table(&summaries).as_bytes())?;
    Ok(())
}

/// Prints the active version of the blue/green read model `group`.
pub(crate) async fn version<C: ProjectionControl>(
    control: &C,
    group: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let stored = control.active_version(group).await?;
    let active = version_number(stored.as_deref())?;
    match stored {
        None => writeln!(
            out,
            "{group}: version 1 (no switch yet; readers read the projection named {group})"
        )?,
        Some(_) => writeln!(out, "{group}: version {active}")?,
    }
    Ok(())
}

/// Switches the readers of `group` to `version`, from the version active now.
pub(crate) async fn switch<C: ProjectionControl>(
    control: &C,
    group: &str,
    version: u32,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if version == 0 {
        return Err(CliError::Usage("versions start at 1".to_owned()));
    }
    let stored = control.active_version(group).await?;
    let active = version_number(stored.as_deref())?;
    if active == version {
        writeln!(out, "{group}: version {version} is active already")?;
        return Ok(());
    }
    if !control
        .switch_version(group, stored.as_deref(), &format!("v{version}"))
        .await?
    {
        return Err(CliError::Usage(format!(
            "{group}: the active version changed while switching; see `decider version {group}`"
        )));
    }
    writeln!(
        out,
        "{group}: readers switched from version {active} to {version}"
    )?;
    Ok(())
}

/// The summary of `projection`, or an error listing the projections that have reported.
async fn registered<C: ProjectionControl>(
    control: &C,
    projection: &str,
) -> Result<Summary, CliError> {
    let summaries = summarise(control.reports().await?, SystemTime::now());
    if let Some(summary) = summaries.iter().find(|s| s.report.projection == projection) {
        return Ok(summary.clone());
    }
    Err(CliError::UnknownProjection {
        projection: projection.to_owned(),
        registered: summaries
            .iter()
            .map(|s| s.report.projection.clone())
            .collect(),
    })
}

/// An error if `projection` is a partition (`name[i/N]`), or runs as partitions now: runners
/// refuse to rebuild a partition alone (ADR 12), so say why, and what to do instead, before
/// asking. (Reports of partitions that stopped reporting long ago do not count: the
/// projection may run unpartitioned again.)
async fn refuse_partitions<C: ProjectionControl>(
    control: &C,
    projection: &str,
) -> Result<(), CliError> {
    let named_partition = partition_of(projection);
    let group = named_partition.unwrap_or(projection);
    let now = SystemTime::now();
    let mut partitions: Vec<String> = control
        .reports()
        .await?
        .into_iter()
        .filter(|report| named_partition.is_some() || report.is_current(now))
        .map(|report| report.projection)
        .filter(|name| partition_of(name) == Some(group))
        .collect();
    if partitions.is_empty() && named_partition.is_none() {
        return Ok(());
    }
    if named_partition.is_some() && !partitions.iter().any(|name| name == projection) {
        partitions.push(projection.to_owned());
    }
    partitions.sort();
    partitions.dedup();
    Err(CliError::Partitioned {
        projection: group.to_owned(),
        partitions,
    })
}

/// The projection that `name` is a partition of (`balances` for `balances[1/4]`), if it is one.
fn partition_of(name: &str) -> Option<&str> {
    let (group, rest) = name.strip_suffix(']')?.rsplit_once('[')?;
    let (index, count) = rest.split_once('/')?;
    let numbers = index.parse::<u32>().is_ok() && count.parse::<u32>().is_ok();
    numbers.then_some(group)
}

/// Asks for `action` on `projection`; unless `no_wait`, follows it to its end (for a rebuild:
/// until the replay has caught up) and prints what came of it.
pub(crate) async fn request<C: ProjectionControl>(
    control: &C,
    projection: &str,
    action: ControlAction,
    no_wait: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if matches!(action, ControlAction::Rebuild) {
        refuse_partitions(control, projection).await?;
    }
    let summary = registered(control, projection).await?;
    let id = control.request(projection, action).await?;
    let what = match action {
        ControlAction::Rebuild => "rebuild",
        ControlAction::RedriveDeadLetters => "re-drive of the dead letters",
    };
    writeln!(out, "requested the {what} of {projection} (request {id})")?;
    if !summary.running {
        writeln!(
            out,
            "no runner of {projection} is running (last report {} by {}): the request waits \
             for the next one to start",
            render::timestamp(summary.report.reported_at),
            summary.report.runner
        )?;
        return Ok(());
    }
    if no_wait {
        return Ok(());
    }
    out.flush()?;
    let done = wait_until_done(control, id).await?;
    let summary = done
        .result
        .clone()
        .map_err(|error| CliError::RequestFailed {
            id,
            runner: done.by.clone(),
            error,
        })?;
    match action {
        ControlAction::RedriveDeadLetters => {
            writeln!(out, "{projection}: {summary} (by {})", done.by)?;
            if !summary.contains(" 0 failed again") {
                writeln!(
                    out,
                    "`decider dead-letters list {projection}` shows the letters left"
                )?;
            }
        }
        ControlAction::Rebuild => {
            writeln!(out, "{projection}: {summary} (by {})", done.by)?;
            out.flush()?;
            let caught_up = follow_replay(control, projection, &done, out).await?;
            writeln!(
                out,
                "{projection} rebuilt: caught up at {} in {:.1} s",
                or_dash(caught_up.report.checkpoint),
                caught_up.took.as_secs_f64()
            )?;
        }
    }
    Ok(())
}

async fn wait_until_done<C: ProjectionControl>(
    control: &C,
    id: u64,
) -> Result<RequestDone, CliError> {
    loop {
        match control.request_status(id).await? {
            Some(ControlRequest {
                done: Some(done), ..
            }) => return Ok(done),
            Some(_) => tokio::time::sleep(POLL).await,
            None => {
                return Err(CliError::Usage(format!(
                    "request {id} is gone from the store"
                )));
            }
        }
    }
}

struct CaughtUp {
    report: RunnerReport,
    took: Duration,
}

/// Follows the replay of the runner that did the reset until it reports itself live: a bar on
/// a terminal, a line every few seconds otherwise.
async fn follow_replay<C: ProjectionControl>(
    control: &C,
    projection: &str,
    done: &RequestDone,
    out: &mut impl Write,
) -> Result<CaughtUp, CliError> {
    let started = Instant::now();
    let of_runner = |reports: Vec<RunnerReport>| {
        reports
            .into_iter()
            .find(|r| r.projection == projection && r.runner == done.by)
    };
    // The runner's report when the request was seen done may predate the reset: only one it
    // writes after that (later by its own clock) tells about the replay.
    let seen_done_at = of_runner(control.reports().await?).map(|r| r.reported_at);
    let bar = replay_bar();
    let mut last_line = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let Some(report) = of_runner(control.reports().await?) else {
            continue;
        };
        if Some(report.reported_at) <= seen_done_at {
            continue;
        }
        let (at, head) = (
            report.checkpoint.map_or(0, |p| p.prepare()),
            report.head.map_or(0, |p| p.prepare()),
        );
        if report.state == ReportedState::Live {
            bar.finish_and_clear();
            return Ok(CaughtUp {
                report,
                took: started.elapsed(),
            });
        }
        if !report.is_current(SystemTime::now()) {
            bar.finish_and_clear();
            return Err(CliError::RunnerGone {
                projection: projection.to_owned(),
                runner: report.runner,
                state: report.state.to_string(),
                error: report.error.unwrap_or_default(),
            });
        }
        if bar.is_hidden() {
            if last_line.elapsed() >= PLAIN_PROGRESS_EVERY {
                writeln!(
                    out,
                    "replaying: at {} of {} ({})",
                    or_dash(report.checkpoint),
                    or_dash(report.head),
                    report.state
                )?;
                out.flush()?;
                last_line = Instant::now();
            }
        } else {
            bar.set_length(head.max(at));
            bar.set_position(at);
        }
    }
}

/// A bar on stderr when it is a terminal, of log positions replayed, with rate and ETA.
fn replay_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} positions  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use decider_core::Position;

    fn report(projection: &str, runner: &str, state: ReportedState, age: u64) -> RunnerReport {
        RunnerReport {
            projection: projection.to_owned(),
            runner: runner.to_owned(),
            state,
            error: None,
            checkpoint: Some(Position::new(7, 7)),
            head: Some(Position::new(9, 9)),
            lag: Some(2),
            events_per_second: 10.4,
            interval: Duration::from_secs(1),
            reported_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 - age),
        }
    }

    #[test]
    fn a_partition_is_named_by_its_projection_index_and_count() {
        assert_eq!(partition_of("balances[1/4]"), Some("balances"));
        assert_eq!(partition_of("bank@v2[0/2]"), Some("bank@v2"));
        assert_eq!(partition_of("balances"), None);
        assert_eq!(partition_of("odd[name]"), None);
        assert_eq!(partition_of("odd[1/x]"), None);
    }

    #[test]
    fn the_active_current_runner_speaks_for_its_projection() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let summaries = summarise(
            vec![
                report("b", "h:2:1", ReportedState::WaitingForLease, 0),
                report("b", "h:1:1", ReportedState::Live, 1),
                report("b", "h:0:1", ReportedState::Live, 600),
                report("a", "h:0:2", ReportedState::Stopped, 600),
            ],
            now,
        );
        let seen: Vec<_> = summaries
            .iter()
            .map(|s| (s.report.runner.as_str(), s.current_runners, s.running))
            .collect();
        assert_eq!(seen, [("h:0:2", 0, false), ("h:1:1", 2, true)]);
        let table = projections_table(&summaries);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "PROJECTION  STATE                        CHECKPOINT  HEAD  LAG  EVENTS/S  RUNNERS  REPORTED_AT               DETAIL",
                "a           not running (last: stopped)  7/7         9/9   2    10        0        1970-01-01T00:06:40.000Z  last seen: h:0:2",
                "b           live                         7/7         9/9   2    10        2        1970-01-01T00:16:39.000Z  by h:1:1",
            ]
        );
    }
}

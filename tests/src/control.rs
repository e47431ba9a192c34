//! The contract of [`ProjectionControl`]: what runners report, what operators request, and how a
//! request is carried out once.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! decider_tests::control::control_contract(decider_core::projection::MemoryControl::default()).await;
//! # });
//! ```

use std::time::{Duration, SystemTime};

use decider_core::Position;
use decider_core::projection::{
    ControlAction, ProjectionControl, ReportedState, RunnerReport, runner_id,
};

/// Every check below, one after the other. Projection names are unique per call, so a store
/// that other tests use at the same time passes too.
pub async fn control_contract<C: ProjectionControl>(control: C) {
    a_report_replaces_the_previous_one_of_its_runner(&control).await;
    requests_are_pending_until_completed_once(&control).await;
    versions_switch_by_compare_and_set(&control).await;
    partition_counts_are_recorded_once(&control).await;
}

/// The first claim of a projection's partition count records it; later claims, of any count,
/// answer the recorded one; projections are independent. Racing first claims agree.
pub async fn partition_counts_are_recorded_once<C: ProjectionControl>(control: &C) {
    let (projection, other) = (unique("control-parts"), unique("control-parts"));
    assert_eq!(control.partition_count(&projection).await.unwrap(), None);
    assert_eq!(
        control.claim_partition_count(&projection, 4).await.unwrap(),
        4
    );
    assert_eq!(
        control.claim_partition_count(&projection, 2).await.unwrap(),
        4
    );
    assert_eq!(control.partition_count(&projection).await.unwrap(), Some(4));
    let racers = (1..=8).map(|count| control.claim_partition_count(&other, count));
    let answers: Vec<u32> = futures::future::try_join_all(racers).await.unwrap();
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "every racer is told the one recorded count: {answers:?}"
    );
    assert_eq!(
        control.partition_count(&other).await.unwrap(),
        Some(answers[0])
    );
}

/// The active version of a group is none at first, then what the last winning switch set; a
/// switch from a version that is not active does nothing; groups are independent.
pub async fn versions_switch_by_compare_and_set<C: ProjectionControl>(control: &C) {
    let (group, other) = (unique("control-version"), unique("control-version"));
    assert_eq!(control.active_version(&group).await.unwrap(), None);
    assert!(control.switch_version(&group, None, "v2").await.unwrap());
    assert!(
        !control.switch_version(&group, None, "v3").await.unwrap(),
        "a second first switch wins"
    );
    assert!(
        !control
            .switch_version(&group, Some("v1"), "v3")
            .await
            .unwrap(),
        "a switch from a version that is not active wins"
    );
    assert_eq!(
        control.active_version(&group).await.unwrap().as_deref(),
        Some("v2")
    );
    assert!(
        control
            .switch_version(&group, Some("v2"), "v3")
            .await
            .unwrap()
    );
    assert_eq!(
        control.active_version(&group).await.unwrap().as_deref(),
        Some("v3")
    );
    assert_eq!(control.active_version(&other).await.unwrap(), None);
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn report(projection: &str, runner: &str, state: ReportedState, at: u64) -> RunnerReport {
    RunnerReport {
        projection: projection.to_owned(),
        runner: runner.to_owned(),
        state,
        error: (state == ReportedState::Reconnecting).then(|| "connection reset".to_owned()),
        checkpoint: Some(Position::new(at, at)),
        head: Some(Position::new(at + 5, at + 5)),
        lag: Some(5),
        events_per_second: 12.5,
        interval: Duration::from_millis(1_500),
        // Whole milliseconds: what every store can keep exactly.
        reported_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + at),
    }
}

/// Reports are kept per projection and runner; a runner's new report replaces its old one,
/// every field round-trips.
pub async fn a_report_replaces_the_previous_one_of_its_runner<C: ProjectionControl>(control: &C) {
    let projection = unique("control-report");
    let (first, second) = (runner_id(), runner_id());
    control
        .report(&report(&projection, &first, ReportedState::CatchingUp, 10))
        .await
        .expect("report");
    control
        .report(&report(
            &projection,
            &second,
            ReportedState::WaitingForLease,
            0,
        ))
        .await
        .expect("report");
    let newer = report(&projection, &first, ReportedState::Reconnecting, 20);
    control.report(&newer).await.expect("report again");

    let mut mine: Vec<_> = control
        .reports()
        .await
        .expect("reports")
        .into_iter()
        .filter(|r| r.projection == projection)
        .collect();
    mine.sort_by(|a, b| a.runner.cmp(&b.runner));
    let mut expected = vec![
        newer,
        report(&projection, &second, ReportedState::WaitingForLease, 0),
    ];
    expected.sort_by(|a, b| a.runner.cmp(&b.runner));
    assert_eq!(mine, expected, "one report per runner, the newest");
}

/// A request is pending, oldest first, until completed; completing it again changes nothing;
/// requests of other projections are not pending for this one.
pub async fn requests_are_pending_until_completed_once<C: ProjectionControl>(control: &C) {
    let projection = unique("control-request");
    let other = unique("control-other");
    let before = SystemTime::now() - Duration::from_secs(1);
    let rebuild = control
        .request(&projection, ControlAction::Rebuild)
        .await
        .expect("request");
    let redrive = control
        .request(&projection, ControlAction::RedriveDeadLetters)
        .await
        .expect("request");
    let elsewhere = control
        .request(&other, ControlAction::Rebuild)
        .await
        .expect("request");
    assert!(rebuild != redrive && redrive != elsewhere);

    let pending = control.pending(&projection).await.expect("pending");
    let seen: Vec<_> = pending.iter().map(|r| (r.id, r.action)).collect();
    assert_eq!(
        seen,
        [
            (rebuild, ControlAction::Rebuild),
            (redrive, ControlAction::RedriveDeadLetters)
        ]
    );
    assert!(
        pending
            .iter()
            .all(|r| r.projection == projection && r.done.is_none() && r.requested_at > before)
    );

    control
        .complete(rebuild, "runner-a", Ok("rebuilt".to_owned()))
        .await
        .expect("complete");
    control
        .complete(rebuild, "runner-b", Err("too late".to_owned()))
        .await
        .expect("complete again");
    control
        .complete(redrive, "runner-a", Err("store down".to_owned()))
        .await
        .expect("complete");

    assert!(
        control
            .pending(&projection)
            .await
            .expect("pending")
            .is_empty()
    );
    let done = control
        .request_status(rebuild)
        .await
        .expect("status")
        .expect("the request exists");
    let outcome = done.done.expect("done");
    assert_eq!(
        (outcome.by.as_str(), outcome.result),
        ("runner-a", Ok("rebuilt".to_owned())),
        "the first completion stands"
    );
    assert!(outcome.at >= done.requested_at);
    let failed = control
        .request_status(redrive)
        .await
        .expect("status")
        .expect("exists");
    assert_eq!(
        failed.done.expect("done").result,
        Err("store down".to_owned())
    );
    assert_eq!(
        control.pending(&other).await.expect("pending").len(),
        1,
        "the other projection's request is untouched"
    );
    assert!(
        control
            .request_status(elsewhere + 1_000_000)
            .await
            .expect("status")
            .is_none()
    );
}

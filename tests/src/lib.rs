//! # decider-tests
//!
//! The conformance kit for [`EventStore`](decider_core::EventStore) implementations: every point
//! of the store contract (`decider_core::store`) as a named async check, so that each store —
//! ours and yours — is held to the same rules: expected versions, atomic and idempotent appends,
//! stream and global reads, filters, catch-up-then-live subscriptions, concurrency and bad input.
//!
//! ## Running the kit against a store
//!
//! Write an integration test file (for example `tests/conformance.rs` of your store's package,
//! with `decider-tests` as a dev-dependency) holding one async factory that returns a fresh store,
//! and call the macro at module level:
//!
//! ```
//! use decider_store_memory::MemoryStore;
//!
//! async fn fresh_store() -> MemoryStore {
//!     MemoryStore::new()
//! }
//!
//! decider_tests::conformance_tests!(fresh_store);
//! # fn main() {}
//! ```
//!
//! The macro expands to one `#[test]` per check, named after the check (for example
//! `append_with_exact_version_refuses_a_stale_revision`), so `cargo nextest run` lists, runs and
//! filters them one by one. Each test builds a multi-threaded tokio runtime with two workers,
//! calls the factory, runs the check on the store and fails if the check panics or takes longer
//! than [`CHECK_TIME_LIMIT`]. The package running the macro needs no tokio dependency of its own.
//!
//! A store that holds outside resources (a database schema, a container) can name an async
//! teardown too; it receives a clone of the store and runs after the check, also when the check
//! failed:
//!
//! ```
//! # use decider_store_memory::MemoryStore;
//! async fn fresh_store() -> MemoryStore {
//!     MemoryStore::new() // e.g. connect, and create a schema for this test
//! }
//!
//! async fn drop_store(store: MemoryStore) {
//!     drop(store); // e.g. drop the schema
//! }
//!
//! decider_tests::conformance_tests!(fresh_store, drop_store);
//! # fn main() {}
//! ```
//!
//! The store type must be `EventStore + Clone` (wrap it in an `Arc` if it is not `Clone`): the
//! concurrency checks hand clones to several tasks, and the teardown gets its own.
//!
//! ## Shared stores
//!
//! Every check writes to streams of its own, named `<unique category>-<unique id>`, and reads the
//! global log only through a filter on its own categories and event types, or asserts only about
//! its own events. The checks therefore also pass on a store that already holds other events or
//! that other tests write to at the same time.
//!
//! ## Calling checks one by one
//!
//! The checks are plain `pub async fn name<S: EventStore + Clone>(store: S)` functions in the
//! modules of [`conformance`], grouped by topic; a store's own tests can call any of them
//! directly, for instance inside a test with an unusual setup.
//!
//! ## JSON payloads
//!
//! Binary payloads ([`ContentType::Binary`](decider_core::ContentType::Binary)) must come back
//! byte for byte. JSON payloads must come back as the same JSON value: a store may keep them in a
//! form such as PostgreSQL's `jsonb`, which normalises whitespace and key order.

// The kit is test code: a failed expectation is a failed check, and panicking with a message that
// names the broken contract point is how a check reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![deny(missing_docs)]

pub mod conformance;
pub mod control;

/// The README's code, compiled and run as doctests, so that what a newcomer copies first
/// always builds. (Only under `cargo test --doc`; the fragments the README marks `ignore` are
/// pieces of that example, not programs.)
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct Readme;

use std::time::Duration;

/// The longest a single check may run before it fails: generous, so that a slow but correct store
/// (a database on a busy CI machine) passes, and a store that hangs fails instead of blocking the
/// test run.
pub const CHECK_TIME_LIMIT: Duration = Duration::from_secs(300);

/// Expands to one `#[test]` per conformance check, run against the store `factory` returns.
///
/// `factory` is a path to an `async fn() -> S` where `S: EventStore + Clone`; it is called once
/// per test. The optional `teardown` is a path to an `async fn(S)`; it runs after the check, even
/// when the check failed, before the failure is reported.
///
/// Call it at module level of an integration test file; see the [crate docs](crate) for an
/// example.
///
/// Two more forms report checks as *ignored* instead of running them, with a reason that
/// `cargo nextest run --run-ignored only` (or `cargo test -- --ignored`) shows:
///
/// - `conformance_tests!(factory, teardown, ignore = "reason")` ignores every check — for a
///   store whose server is not available by default (an environment variable names it);
/// - `conformance_tests!(factory, teardown, each = my_macro)` calls a macro of yours once per
///   check, as `my_macro! { [] factory, teardown; module::check }`, so that it can match some
///   checks by name — contract points a store's server does not meet — and make them ignored
///   tests with the reason, passing the rest to [`conformance_test!`]:
///
/// ```
/// # use decider_store_memory::MemoryStore;
/// # async fn fresh_store() -> MemoryStore { MemoryStore::new() }
/// # async fn drop_store(_: MemoryStore) {}
/// macro_rules! with_known_differences {
///     ($attrs:tt $f:path, $t:path;
///         append :: append_reusing_ids_of_another_stream_is_invalid_input) => {
///         decider_tests::conformance_test! {
///             [ignore = "no index of event ids across streams"] $f, $t;
///             append :: append_reusing_ids_of_another_stream_is_invalid_input
///         }
///     };
///     ($attrs:tt $f:path, $t:path; $module:ident :: $check:ident) => {
///         decider_tests::conformance_test! { $attrs $f, $t; $module :: $check }
///     };
/// }
/// decider_tests::conformance_tests!(fresh_store, drop_store, each = with_known_differences);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path $(,)?) => {
        $crate::conformance_tests!($factory, $crate::__private::no_teardown);
    };
    ($factory:path, $teardown:path $(,)?) => {
        $crate::conformance_tests!(@tests conformance_test, [] $factory, $teardown);
    };
    ($factory:path, $teardown:path, ignore = $reason:literal $(,)?) => {
        $crate::conformance_tests!(@tests conformance_test, [ignore = $reason] $factory, $teardown);
    };
    ($factory:path, $teardown:path, each = $callback:ident $(,)?) => {
        $crate::conformance_tests!(@tests $callback, [] $factory, $teardown);
    };
    (@tests $callback:ident, $attrs:tt $factory:path, $teardown:path) => {
        $crate::__conformance_tests! {
            $callback, $attrs $factory, $teardown;
            append::append_with_any_creates_a_new_stream,
            append::append_with_any_extends_an_existing_stream,
            append::append_with_no_stream_creates_a_new_stream,
            append::append_with_no_stream_refuses_an_existing_stream,
            append::append_with_stream_exists_refuses_a_new_stream,
            append::append_with_stream_exists_extends_an_existing_stream,
            append::append_with_exact_version_extends_at_the_last_revision,
            append::append_with_exact_version_refuses_a_stale_revision,
            append::append_with_exact_version_refuses_a_revision_ahead,
            append::append_with_exact_version_refuses_a_new_stream,
            append::append_writes_a_batch_at_contiguous_revisions_and_increasing_positions,
            append::append_refused_for_a_conflict_writes_none_of_its_events,
            append::append_retried_with_the_same_expectation_returns_the_original_result,
            append::append_retried_with_a_stale_or_current_exact_version_returns_the_original_result,
            append::append_reusing_only_some_ids_of_an_earlier_batch_is_invalid_input,
            append::append_reusing_ids_of_another_stream_is_invalid_input,
            append::append_of_an_empty_batch_is_invalid_input,
            append::append_with_duplicate_ids_in_one_batch_is_invalid_input,
            read::read_stream_forward_from_start_returns_every_event_in_order,
            read::read_stream_forward_from_a_revision_includes_that_revision,
            read::read_stream_forward_with_a_limit_returns_at_most_limit_events,
            read::read_stream_backward_from_end_returns_every_event_newest_first,
            read::read_stream_backward_from_a_revision_includes_that_revision,
            read::read_stream_backward_with_a_limit_returns_at_most_limit_events,
            read::read_stream_forward_from_end_and_backward_from_start_return_nothing,
            read::read_stream_of_a_missing_stream_returns_nothing,
            read::read_stream_returns_long_streams_whole_in_both_directions,
            read::read_stream_round_trips_every_field,
            read::read_all_returns_events_in_global_order_across_streams,
            read::read_all_after_a_position_excludes_that_position,
            read::read_all_with_a_limit_returns_at_most_limit_matching_events,
            read::read_all_returns_long_filtered_results_whole,
            read::read_all_filters_by_event_type,
            read::read_all_filters_by_category,
            read::read_all_filters_by_event_type_and_category_together,
            read::head_position_is_the_newest_position_a_read_returns,
            read::named_reads_return_what_the_reads_they_name_return,
            subscribe::subscribe_all_delivers_existing_events_then_caught_up_once_then_live_events,
            subscribe::subscribe_all_to_an_empty_scope_sends_caught_up_first,
            subscribe::subscribe_all_resumes_after_every_position,
            subscribe::subscribe_all_with_a_filter_delivers_only_matching_events,
            subscribe::subscribe_all_started_during_appends_delivers_every_event_once,
            subscribe::subscribe_all_delivers_every_event_once_to_a_slow_subscriber,
            subscribe::subscribe_stream_delivers_existing_events_then_caught_up_once_then_live_events,
            subscribe::subscribe_stream_resumes_after_every_revision,
            subscribe::subscribe_stream_to_a_missing_stream_sends_caught_up_then_its_first_events,
            subscribe::subscribe_stream_started_during_appends_delivers_every_event_once,
            partition::read_all_by_partition_returns_each_event_in_exactly_its_streams_partition,
            partition::subscribe_all_by_partition_delivers_only_its_streams_catch_up_then_live,
            concurrency::concurrent_exact_appends_to_one_stream_admit_exactly_one_winner_per_revision,
            concurrency::concurrent_writers_on_many_streams_are_seen_once_in_order_by_a_live_subscriber,
            concurrency::concurrent_retries_of_one_batch_write_it_once,
            bad_input::stream_ids_that_are_empty_too_long_or_hold_control_characters_are_refused,
            bad_input::stream_id_of_255_bytes_works_end_to_end,
            bad_input::stream_ids_and_event_types_with_sql_metacharacters_work_end_to_end,
            bad_input::stream_ids_with_unicode_work_end_to_end,
            bad_input::unknown_event_type_fails_to_decode_naming_stream_revision_and_type,
            bad_input::one_megabyte_payloads_round_trip,
            bad_input::text_no_store_can_hold_is_invalid_input_and_writes_nothing,
        }
    };
}

/// Expands to one `#[test]` per check of [`conformance::dcb`], for a store that implements
/// [`DcbStore`](decider_core::dcb::DcbStore) (dynamic consistency boundaries): reads by query,
/// conditional appends, and the race checks. The forms are those of [`conformance_tests!`]:
/// `dcb_conformance_tests!(factory)` or `dcb_conformance_tests!(factory, teardown)`.
///
/// ```
/// use decider_store_memory::MemoryStore;
///
/// async fn fresh_store() -> MemoryStore {
///     MemoryStore::new()
/// }
///
/// decider_tests::dcb_conformance_tests!(fresh_store);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! dcb_conformance_tests {
    ($factory:path $(,)?) => {
        $crate::dcb_conformance_tests!($factory, $crate::__private::no_teardown);
    };
    ($factory:path, $teardown:path $(,)?) => {
        $crate::__conformance_tests! {
            conformance_test, [] $factory, $teardown;
            dcb::tagged_events_are_found_by_query_in_log_order,
            dcb::a_condition_fails_only_on_a_matching_event_after_its_position,
            dcb::a_repeated_conditional_append_returns_its_original_result,
            dcb::sixteen_racers_for_the_last_seat_one_wins,
            dcb::sixteen_appenders_on_disjoint_tags_all_win,
            dcb::conditional_appends_never_commit_over_an_unseen_matching_event,
            dcb::random_operations_agree_with_the_memory_model,
        }
    };
}

/// The tests of [`conformance_tests!`]: one `#[test]` per check, named after it.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (conformance_test, $attrs:tt $factory:path, $teardown:path;
        $($module:ident :: $check:ident),* $(,)?) => {
        $( $crate::conformance_test! { $attrs $factory, $teardown; $module :: $check } )*
    };
    ($callback:ident, $attrs:tt $factory:path, $teardown:path;
        $($module:ident :: $check:ident),* $(,)?) => {
        $( $callback! { $attrs $factory, $teardown; $module :: $check } )*
    };
}

/// One test of [`conformance_tests!`]: `conformance_test! { [attributes] factory, teardown;
/// module::check }` expands to a `#[test]` named after the check, with the attributes in brackets
/// (for instance `ignore = "reason"`). Meant for the `each` form of [`conformance_tests!`].
#[macro_export]
macro_rules! conformance_test {
    ([$($attr:meta),* $(,)?] $factory:path, $teardown:path; $module:ident :: $check:ident) => {
        #[test]
        $(#[$attr])*
        fn $check() {
            $crate::__private::run_check(
                ::core::stringify!($check),
                $factory,
                $teardown,
                $crate::conformance::$module::$check,
            );
        }
    };
}

/// What the macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;
    use std::panic::AssertUnwindSafe;

    use decider_core::EventStore;
    use futures::FutureExt;

    use crate::CHECK_TIME_LIMIT;

    /// The teardown of `conformance_tests!(factory)`: nothing to do.
    pub async fn no_teardown<S>(_store: S) {}

    /// Runs one check the way `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
    /// would, plus the teardown and the time limit: builds the runtime, makes the store, runs the
    /// check on a clone, runs the teardown whatever happened, then reports the check's failure.
    pub fn run_check<S, Factory, Made, Teardown, TornDown, Check, Checked>(
        name: &str,
        factory: Factory,
        teardown: Teardown,
        check: Check,
    ) where
        S: EventStore + Clone,
        Factory: FnOnce() -> Made,
        Made: Future<Output = S>,
        Teardown: FnOnce(S) -> TornDown,
        TornDown: Future<Output = ()>,
        Check: FnOnce(S) -> Checked,
        Checked: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("cannot build the tokio runtime for a conformance check");
        runtime.block_on(async move {
            let store = factory().await;
            let outcome =
                AssertUnwindSafe(tokio::time::timeout(CHECK_TIME_LIMIT, check(store.clone())))
                    .catch_unwind()
                    .await;
            teardown(store).await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(_elapsed)) => panic!(
                    "{name} did not finish within {CHECK_TIME_LIMIT:?}: the store hangs or is far \
                     too slow"
                ),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use decider_store_memory::MemoryStore;

    use super::__private::run_check;

    #[test]
    fn every_public_check_is_run_by_the_macro() {
        let modules = [
            ("append", include_str!("conformance/append.rs")),
            ("read", include_str!("conformance/read.rs")),
            ("subscribe", include_str!("conformance/subscribe.rs")),
            ("concurrency", include_str!("conformance/concurrency.rs")),
            ("bad_input", include_str!("conformance/bad_input.rs")),
            ("dcb", include_str!("conformance/dcb.rs")),
        ];
        let mut defined = Vec::new();
        for (module, source) in modules {
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split(['<', '(']).next().unwrap();
                    defined.push(format!("{module}::{name}"));
                }
            }
        }
        // The macro's list: the lines `module::check,` of this file.
        let listed: Vec<String> = include_str!("lib.rs")
            .lines()
            .map(str::trim)
            .filter_map(|line| line.strip_suffix(','))
            .filter(|line| {
                line.split_once("::").is_some_and(|(module, check)| {
                    modules.iter().any(|(m, _)| *m == module)
                        && check.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                })
            })
            .map(str::to_owned)
            .collect();
        assert_eq!(
            listed, defined,
            "conformance_tests! and dcb_conformance_tests! must list every check once, in the \
             order of the modules"
        );
    }

    #[test]
    fn teardown_runs_after_a_failed_check_and_the_failure_is_reported() {
        static TORN_DOWN: AtomicBool = AtomicBool::new(false);
        async fn fresh_store() -> MemoryStore {
            MemoryStore::new()
        }
        async fn teardown(_store: MemoryStore) {
            TORN_DOWN.store(true, Ordering::SeqCst);
        }
        async fn failing_check(_store: MemoryStore) {
            panic!("the check failed");
        }
        let outcome = std::panic::catch_unwind(|| {
            run_check("failing_check", fresh_store, teardown, failing_check);
        });
        let panic = outcome.expect_err("a failed check must fail its test");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"the check failed"));
        assert!(TORN_DOWN.load(Ordering::SeqCst), "teardown did not run");
    }

    #[test]
    fn the_check_gets_a_clone_of_the_store_the_teardown_sees() {
        static SAW_EVENT: AtomicBool = AtomicBool::new(false);
        async fn fresh_store() -> MemoryStore {
            MemoryStore::new()
        }
        async fn teardown(store: MemoryStore) {
            use futures::TryStreamExt;
            let events: Vec<_> = decider_core::EventStore::read_all(
                &store,
                None,
                None,
                &decider_core::EventFilter::all(),
            )
            .try_collect()
            .await
            .unwrap();
            SAW_EVENT.store(events.len() == 1, Ordering::SeqCst);
        }
        async fn writing_check(store: MemoryStore) {
            let stream = decider_core::StreamId::new("probe-1").unwrap();
            let event = decider_core::EventData::json("Probed", "{}");
            decider_core::EventStore::append(
                &store,
                &stream,
                decider_core::ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .unwrap();
        }
        run_check("writing_check", fresh_store, teardown, writing_check);
        assert!(SAW_EVENT.load(Ordering::SeqCst));
    }
}

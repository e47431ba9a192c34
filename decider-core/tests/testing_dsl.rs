//! The given/when/then DSL itself: it passes when the expectation holds and, for every `then`,
//! fails with a message that shows what was given and the difference between expected and
//! actual.
#![cfg(feature = "testing")]

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use decider_core::testing::{handler_spec, saga_spec, spec, view_spec};
use decider_core::{
    CommandError, CommandHandler, Decider, EventData, JsonCodec, Metadata, Saga, StoreError,
    StreamId, View,
};
use decider_store_memory::MemoryStore;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

// --- The domain under test ---------------------------------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Event {
    Opened { owner: String },
    Deposited { amount: u64 },
    Closed,
}

/// No `Debug`: the DSL must not need it.
enum Command {
    Open {
        owner: String,
    },
    Deposit {
        amount: u64,
    },
    /// Deposits each amount in turn: several events.
    DepositAll(Vec<u64>),
    Close,
    /// Accepted, changes nothing.
    Touch,
}

#[derive(Debug, PartialEq)]
enum Error {
    AlreadyOpen,
    NotOpen,
    ZeroAmount,
}

#[derive(Debug, PartialEq)]
enum State {
    New,
    Open { balance: u64 },
    Closed,
}

struct Account;

impl Decider for Account {
    type Command = Command;
    type Event = Event;
    type State = State;
    type Error = Error;

    fn initial_state(&self) -> State {
        State::New
    }

    fn decide(&self, command: &Command, state: &State) -> Result<Vec<Event>, Error> {
        match (command, state) {
            (Command::Open { owner }, State::New) => Ok(vec![Event::Opened {
                owner: owner.clone(),
            }]),
            (Command::Open { .. }, _) => Err(Error::AlreadyOpen),
            (_, State::New | State::Closed) => Err(Error::NotOpen),
            (Command::Deposit { amount: 0 }, _) => Err(Error::ZeroAmount),
            (Command::Deposit { amount }, _) => Ok(vec![Event::Deposited { amount: *amount }]),
            (Command::DepositAll(amounts), _) => Ok(amounts
                .iter()
                .map(|&amount| Event::Deposited { amount })
                .collect()),
            (Command::Close, _) => Ok(vec![Event::Closed]),
            (Command::Touch, _) => Ok(vec![]),
        }
    }

    fn evolve(&self, state: State, event: &Event) -> State {
        match (state, event) {
            (_, Event::Opened { .. }) => State::Open { balance: 0 },
            (State::Open { balance }, Event::Deposited { amount }) => State::Open {
                balance: balance + amount,
            },
            (_, Event::Closed) => State::Closed,
            (state, _) => state,
        }
    }

    fn is_terminal(&self, state: &State) -> bool {
        *state == State::Closed
    }
}

fn opened() -> Event {
    Event::Opened {
        owner: "ada".into(),
    }
}

fn deposited(amount: u64) -> Event {
    Event::Deposited { amount }
}

/// The message of the panic `spec` must raise.
#[track_caller]
fn failure(spec: impl FnOnce()) -> String {
    match std::panic::catch_unwind(AssertUnwindSafe(spec)) {
        Ok(()) => panic!("the spec passed, but it should have failed"),
        Err(payload) => message(&*payload),
    }
}

/// The message of the panic the `async` `spec` must raise.
async fn async_failure(spec: impl Future<Output = ()>) -> String {
    match AssertUnwindSafe(spec).catch_unwind().await {
        Ok(()) => panic!("the spec passed, but it should have failed"),
        Err(payload) => message(&*payload),
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else {
        panic!("the panic payload is not text")
    }
}

#[track_caller]
fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "the message lacks {part:?}; it is:\n{message}"
        );
    }
}

// --- Deciders ------------------------------------------------------------------------------------

mod decider {
    use super::*;

    #[test]
    fn passes_when_the_expectation_holds() {
        spec(Account)
            .when(Command::Open {
                owner: "ada".into(),
            })
            .then([opened()]);
        spec(Account)
            .given([opened()])
            .given([deposited(1)])
            .when(Command::DepositAll(vec![2, 3]))
            .then(vec![deposited(2), deposited(3)]);
        spec(Account)
            .given([opened()])
            .when(Command::Deposit { amount: 0 })
            .then_error(Error::ZeroAmount);
        spec(Account)
            .when(Command::Deposit { amount: 5 })
            .then_error_matches(|e| matches!(e, Error::NotOpen));
        spec(Account)
            .given([opened()])
            .when(Command::Touch)
            .then_nothing();
    }

    #[test]
    fn wrong_events_show_given_expected_and_actual_with_the_first_difference_marked() {
        let message = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::DepositAll(vec![1, 2, 3]))
                .then([deposited(1), deposited(5), deposited(3)])
        });
        assert_eq!(
            message,
            "decider spec failed: the command produced other events than expected \
             (first difference at index 1)\n\
             given:\n    \
                 [0] Opened { owner: \"ada\" }\n\
             when: a testing_dsl::Command\n\
             expected events:\n    \
                 [0] Deposited { amount: 1 }\n  \
               > [1] Deposited { amount: 5 }\n    \
                 [2] Deposited { amount: 3 }\n\
             actual events:\n    \
                 [0] Deposited { amount: 1 }\n  \
               > [1] Deposited { amount: 2 }\n    \
                 [2] Deposited { amount: 3 }"
        );
    }

    #[test]
    fn missing_and_extra_events_are_a_difference() {
        let fewer = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::DepositAll(vec![1]))
                .then([deposited(1), deposited(2)])
        });
        assert_contains(
            &fewer,
            &[
                "first difference at index 1",
                "  > [1] Deposited { amount: 2 }",
                "actual events:\n    [0] Deposited { amount: 1 }\n  > [1] (missing)",
            ],
        );

        let more = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::DepositAll(vec![1, 2]))
                .then([deposited(1)])
        });
        assert_contains(
            &more,
            &[
                "first difference at index 1",
                "expected events:\n    [0] Deposited { amount: 1 }\n  > [1] (missing)",
                "  > [1] Deposited { amount: 2 }",
            ],
        );
    }

    #[test]
    fn an_unexpected_error_is_shown() {
        let message = failure(|| {
            spec(Account)
                .when(Command::Deposit { amount: 5 })
                .then([deposited(5)])
        });
        assert_contains(
            &message,
            &[
                "decider spec failed: expected events, but the command was rejected",
                "given: (none)",
                "expected events:\n    [0] Deposited { amount: 5 }",
                "actual error: NotOpen",
            ],
        );
    }

    #[test]
    fn an_expected_error_but_events_shows_the_events() {
        let message = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::Deposit { amount: 5 })
                .then_error(Error::ZeroAmount)
        });
        assert_contains(
            &message,
            &[
                "expected the command to be rejected, but it was accepted",
                "expected error: ZeroAmount",
                "actual events:\n    [0] Deposited { amount: 5 }",
            ],
        );
    }

    #[test]
    fn a_wrong_error_shows_both() {
        let message = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::Open {
                    owner: "bob".into(),
                })
                .then_error(Error::NotOpen)
        });
        assert_contains(
            &message,
            &[
                "the command was rejected with another error",
                "expected error: NotOpen",
                "actual error: AlreadyOpen",
            ],
        );
    }

    #[test]
    fn an_error_the_predicate_refuses_is_shown() {
        let message = failure(|| {
            spec(Account)
                .when(Command::Close)
                .then_error_matches(|e| *e == Error::ZeroAmount)
        });
        assert_contains(
            &message,
            &[
                "the error does not match the predicate",
                "actual error: NotOpen",
            ],
        );

        let accepted = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::Close)
                .then_error_matches(|_| true)
        });
        assert_contains(
            &accepted,
            &[
                "expected the command to be rejected, but it was accepted",
                "actual events:\n    [0] Closed",
            ],
        );
    }

    #[test]
    fn then_nothing_fails_on_events_and_on_errors() {
        let events = failure(|| {
            spec(Account)
                .given([opened()])
                .when(Command::Deposit { amount: 3 })
                .then_nothing()
        });
        assert_contains(
            &events,
            &[
                "expected no events, but the command produced 1",
                "expected events: (none)",
                "actual events:\n  > [0] Deposited { amount: 3 }",
            ],
        );

        let error = failure(|| spec(Account).when(Command::Touch).then_nothing());
        assert_contains(
            &error,
            &[
                "expected the command to be accepted with no events, but it was rejected",
                "actual error: NotOpen",
            ],
        );
    }

    /// An error with neither `PartialEq` nor `Clone`.
    #[derive(Debug)]
    struct Refused(std::io::Error);

    struct Strict;
    impl Decider for Strict {
        type Command = ();
        type Event = ();
        type State = ();
        type Error = Refused;
        fn initial_state(&self) {}
        fn decide(&self, _: &(), _: &()) -> Result<Vec<()>, Refused> {
            Err(Refused(std::io::Error::other("no")))
        }
        fn evolve(&self, _: (), _: &()) {}
    }

    #[test]
    fn then_error_matches_needs_no_partial_eq() {
        spec(Strict)
            .when(())
            .then_error_matches(|Refused(e)| e.to_string() == "no");
        let message = failure(|| spec(Strict).when(()).then_error_matches(|_| false));
        assert_contains(&message, &["actual error: Refused(Custom"]);
    }

    #[test]
    #[should_panic(expected = "decider spec failed: the command produced other events")]
    fn should_panic_works_with_the_headline() {
        spec(Account)
            .given([opened()])
            .when(Command::Deposit { amount: 1 })
            .then([deposited(2)]);
    }
}

// --- Views ---------------------------------------------------------------------------------------

mod view {
    use super::*;

    #[derive(Debug, PartialEq, Default)]
    struct Summary {
        owner: Option<String>,
        deposits: usize,
        balance: u64,
    }

    struct Summaries;
    impl View for Summaries {
        type Event = Event;
        type State = Summary;
        fn initial_state(&self) -> Summary {
            Summary::default()
        }
        fn evolve(&self, mut summary: Summary, event: &Event) -> Summary {
            match event {
                Event::Opened { owner } => summary.owner = Some(owner.clone()),
                Event::Deposited { amount } => {
                    summary.deposits += 1;
                    summary.balance += amount;
                }
                Event::Closed => {}
            }
            summary
        }
    }

    #[test]
    fn passes_when_the_state_matches() {
        view_spec(Summaries).then_state(Summary::default());
        view_spec(Summaries)
            .given([opened(), deposited(2)])
            .given([deposited(3)])
            .then_state(Summary {
                owner: Some("ada".into()),
                deposits: 2,
                balance: 5,
            });
    }

    #[test]
    fn a_wrong_state_shows_both_pretty_with_the_first_differing_line_marked() {
        let message = failure(|| {
            view_spec(Summaries)
                .given([opened(), deposited(2)])
                .then_state(Summary {
                    owner: Some("ada".into()),
                    deposits: 1,
                    balance: 3,
                })
        });
        assert_contains(
            &message,
            &[
                "view spec failed: the state differs from the expected one",
                "given:\n    [0] Opened { owner: \"ada\" }\n    [1] Deposited { amount: 2 }",
                "expected state:",
                "  >     balance: 3,",
                "actual state:",
                "  >     balance: 2,",
            ],
        );
        // Only the first difference is marked.
        assert_eq!(message.matches("  > ").count(), 2, "{message}");
    }
}

// --- Sagas ---------------------------------------------------------------------------------------

mod saga {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Notify {
        Welcome { owner: String },
        Receipt { amount: u64 },
    }

    struct Notifications;
    impl Saga for Notifications {
        type Event = Event;
        type Command = Notify;
        fn react(&self, event: &Event) -> Vec<Notify> {
            match event {
                Event::Opened { owner } => vec![
                    Notify::Welcome {
                        owner: owner.clone(),
                    },
                    Notify::Receipt { amount: 0 },
                ],
                Event::Deposited { amount } => vec![Notify::Receipt { amount: *amount }],
                Event::Closed => vec![],
            }
        }
    }

    #[test]
    fn passes_when_the_commands_match() {
        saga_spec(Notifications)
            .given(deposited(4))
            .then_commands([Notify::Receipt { amount: 4 }]);
        saga_spec(Notifications).given(Event::Closed).then_nothing();
    }

    #[test]
    fn wrong_commands_show_the_event_and_the_diff() {
        let message = failure(|| {
            saga_spec(Notifications)
                .given(opened())
                .then_commands([Notify::Welcome {
                    owner: "ada".into(),
                }])
        });
        assert_contains(
            &message,
            &[
                "saga spec failed: the saga sent other commands than expected \
                 (first difference at index 1)",
                "given: Opened { owner: \"ada\" }",
                "expected commands:\n    [0] Welcome { owner: \"ada\" }\n  > [1] (missing)",
                "actual commands:\n    [0] Welcome { owner: \"ada\" }\n  > [1] Receipt { amount: 0 }",
            ],
        );
    }

    #[test]
    fn then_nothing_fails_on_commands() {
        let message = failure(|| saga_spec(Notifications).given(deposited(1)).then_nothing());
        assert_contains(
            &message,
            &[
                "expected no commands, but the saga sent 1",
                "actual commands:\n  > [0] Receipt { amount: 1 }",
            ],
        );
    }
}

// --- Command handlers ----------------------------------------------------------------------------

mod handler {
    use super::*;

    #[tokio::test]
    async fn passes_when_the_expectation_holds() {
        let store = MemoryStore::new();
        spec(Account)
            .on(store.clone())
            .when(Command::Open {
                owner: "ada".into(),
            })
            .then([opened()])
            .await;
        spec(Account)
            .given([opened()])
            .on(store.clone())
            .given([deposited(1)])
            .when(Command::DepositAll(vec![2, 3]))
            .then([deposited(2), deposited(3)])
            .await;
        spec(Account)
            .on(store.clone())
            .given([opened()])
            .when(Command::Deposit { amount: 0 })
            .then_error(Error::ZeroAmount)
            .await;
        spec(Account)
            .on(store.clone())
            .given([opened(), Event::Closed])
            .when(Command::Deposit { amount: 1 })
            .then_error_matches(|e| matches!(e, CommandError::Terminal { .. }))
            .await;
        spec(Account)
            .on(store.clone())
            .given([opened()])
            .when(Command::Touch)
            .then_nothing()
            .await;
        // Every spec ran on its own fresh stream: 1 + 4 + 1 + 2 + 1 events.
        assert_eq!(store.len(), 9);
    }

    #[tokio::test]
    async fn given_recorded_appends_payloads_as_they_are() {
        spec(Account)
            .on(MemoryStore::new())
            .given_recorded([
                EventData::json("Opened", r#"{"owner":"ada"}"#),
                EventData::json("Deposited", r#"{"amount":5}"#),
            ])
            .given([deposited(1)])
            .when(Command::Open {
                owner: "bob".into(),
            })
            .then_error(Error::AlreadyOpen)
            .await;
    }

    #[tokio::test]
    async fn an_undecodable_given_event_reaches_the_handler_as_a_codec_error() {
        spec(Account)
            .on(MemoryStore::new())
            .given_recorded([EventData::json("Frozen", "{}")])
            .when(Command::Touch)
            .then_error_matches(|e| matches!(e, CommandError::Codec(_)))
            .await;
    }

    #[tokio::test]
    async fn a_store_failing_while_the_spec_sets_up_is_reported_as_such() {
        let store = MemoryStore::new();
        store.fail_append(1, StoreError::unavailable("down"));
        let message = async_failure(
            spec(Account)
                .on(store)
                .in_stream(StreamId::new("account-x").unwrap())
                .given([opened()])
                .when(Command::Touch)
                .then_nothing(),
        )
        .await;
        assert_contains(
            &message,
            &[
                "handler spec failed at ",
                "testing_dsl.rs:",
                "on stream account-x: cannot append the given events: store unavailable: down",
            ],
        );
    }

    #[tokio::test]
    async fn a_named_stream_keeps_what_it_holds_and_a_replayed_command_appends_nothing() {
        let store = MemoryStore::new();
        let stream = StreamId::new("account-ada").unwrap();
        let key = Metadata::default().with_idempotency_key("request-1");
        let accounts = CommandHandler::new(Account, store.clone());
        accounts
            .handle(
                &stream,
                Command::Open {
                    owner: "ada".into(),
                },
            )
            .await
            .unwrap();
        accounts
            .handle_with(&stream, Command::Deposit { amount: 5 }, key.clone())
            .await
            .unwrap();

        spec(Account)
            .on(store.clone())
            .in_stream(stream.clone())
            .when_with(Command::Deposit { amount: 5 }, key.clone())
            .then_nothing()
            .await;
        let message = async_failure(
            spec(Account)
                .on(store)
                .in_stream(stream)
                .when_with(Command::Deposit { amount: 5 }, key)
                .then([deposited(5)]),
        )
        .await;
        assert_contains(
            &message,
            &[
                "stream: account-ada",
                "given: (none)",
                "with metadata: Metadata {",
                "request-1",
                "replayed: the handler answered from the idempotency key",
                "actual events: (none)",
            ],
        );
    }

    #[tokio::test]
    async fn a_custom_handler_runs_with_its_codec() {
        let codec = JsonCodec::<Event>::new().with_upcaster("Deposited", 1, |mut payload| {
            payload["amount"] = serde_json::json!(payload["cents"].as_u64().unwrap_or(0) / 100);
            payload
        });
        let handler = CommandHandler::new(Account, MemoryStore::new()).with_codec(codec);
        // A version-1 payload (absent schema version) in cents, understood through the upcaster.
        handler_spec(handler)
            .given([opened()])
            .given_recorded([EventData::json("Deposited", r#"{"cents":500}"#)])
            .when(Command::Deposit { amount: 1 })
            .then([deposited(1)])
            .await;
    }

    #[tokio::test]
    async fn wrong_events_show_where_the_spec_is_its_stream_and_the_diff() {
        let message = async_failure(
            spec(Account)
                .on(MemoryStore::new())
                .given([opened()])
                .when(Command::DepositAll(vec![1, 2]))
                .then([deposited(1), deposited(3)]),
        )
        .await;
        assert_contains(
            &message,
            &[
                "handler spec failed: the command appended other events than expected \
                 (first difference at index 1)",
                "spec at: ",
                "testing_dsl.rs:",
                "stream: spec-",
                "given:\n    [0] Opened { owner: \"ada\" }",
                "when: a testing_dsl::Command",
                "expected events:\n    [0] Deposited { amount: 1 }\n  > [1] Deposited { amount: 3 }",
                "actual events:\n    [0] Deposited { amount: 1 }\n  > [1] Deposited { amount: 2 }",
            ],
        );
    }

    #[tokio::test]
    async fn an_unexpected_error_is_shown() {
        let message = async_failure(
            spec(Account)
                .on(MemoryStore::new())
                .when(Command::Deposit { amount: 1 })
                .then([deposited(1)]),
        )
        .await;
        assert_contains(
            &message,
            &[
                "expected events, but the command failed",
                "actual error: Rejected(NotOpen)",
            ],
        );
    }

    #[tokio::test]
    async fn an_expected_error_but_events_shows_the_events() {
        let message = async_failure(
            spec(Account)
                .on(MemoryStore::new())
                .given([opened()])
                .when(Command::Deposit { amount: 4 })
                .then_error(Error::ZeroAmount),
        )
        .await;
        assert_contains(
            &message,
            &[
                "expected the command to be rejected, but it was accepted",
                "expected error: Rejected(ZeroAmount)",
                "actual events:\n    [0] Deposited { amount: 4 }",
            ],
        );
    }

    #[tokio::test]
    async fn a_wrong_error_shows_both() {
        let message = async_failure(
            spec(Account)
                .on(MemoryStore::new())
                .given([opened(), Event::Closed])
                .when(Command::Deposit { amount: 4 })
                .then_error(Error::NotOpen),
        )
        .await;
        assert_contains(
            &message,
            &[
                "the command failed with another error",
                "expected error: Rejected(NotOpen)",
                "actual error: Terminal { stream: \"spec-",
            ],
        );

        let refused = async_failure(
            spec(Account)
                .on(MemoryStore::new())
                .when(Command::Close)
                .then_error_matches(|e| e.is_conflict()),
        )
        .await;
        assert_contains(
            &refused,
            &[
                "the error does not match the predicate",
                "actual error: Rejected(NotOpen)",
            ],
        );
    }

    #[tokio::test]
    async fn then_nothing_fails_on_appended_events() {
        let message = async_failure(
            spec(Account)
                .on(MemoryStore::new())
                .given([opened()])
                .when(Command::Close)
                .then_nothing(),
        )
        .await;
        assert_contains(
            &message,
            &[
                "expected no events, but the command appended 1",
                "actual events:\n  > [0] Closed",
            ],
        );
    }

    /// Serialises without its `note`: what the store holds is not what was decided.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Lossy {
        Noted {
            text: String,
            #[serde(skip)]
            note: u32,
        },
    }

    struct Notes;
    impl Decider for Notes {
        type Command = u32;
        type Event = Lossy;
        type State = ();
        type Error = std::convert::Infallible;
        fn initial_state(&self) {}
        fn decide(&self, note: &u32, _: &()) -> Result<Vec<Lossy>, Self::Error> {
            Ok(vec![Lossy::Noted {
                text: "hi".into(),
                note: *note,
            }])
        }
        fn evolve(&self, _: (), _: &Lossy) {}
    }

    #[tokio::test]
    async fn events_are_compared_as_read_back_so_a_lossy_codec_fails() {
        // The pure decider spec passes ...
        spec(Notes).when(7).then([Lossy::Noted {
            text: "hi".into(),
            note: 7,
        }]);
        // ... but the round trip through the store loses `note`.
        let message =
            async_failure(
                spec(Notes)
                    .on(MemoryStore::new())
                    .when(7)
                    .then([Lossy::Noted {
                        text: "hi".into(),
                        note: 7,
                    }]),
            )
            .await;
        assert_contains(
            &message,
            &[
                "  > [0] Noted { text: \"hi\", note: 7 }",
                "  > [0] Noted { text: \"hi\", note: 0 }",
            ],
        );
    }

    #[tokio::test]
    #[should_panic(expected = "handler spec failed: expected events, but the command failed")]
    async fn should_panic_works_in_async_tests() {
        spec(Account)
            .on(MemoryStore::new())
            .when(Command::Touch)
            .then([])
            .await;
    }
}

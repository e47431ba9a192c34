//! The transfer: a process across two accounts, with compensation.
//!
//! ```text
//! requested ──debit source──▶ debited ──credit destination──▶ credited ──settle──▶ completed
//!     │ refused                  │ refused
//!     ▼                          ▼
//!   failed              crediting failed ──refund source──▶ failed (compensated)
//! ```
//!
//! The transfer's own stream records where it is ([`Transfer`], a [`Decider`]); [`next_step`]
//! says, from that state alone, which account command comes next. Both are pure: the
//! [`process`](crate::process) module runs the steps against the store. Every step is sent with
//! an idempotency key made of the transfer id and the step, so however often a step is retried
//! or redelivered, it moves money once.

use std::fmt;

use decider_core::{Category, Decider, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{AccountCommand, AccountId};
use crate::money::{Amount, Currency};

/// The category of transfer streams.
pub const TRANSFERS: Category = Category::new("transfer");

/// A transfer's identity, which is also its idempotency key: its events live in the stream
/// `transfer-<uuid>`, and one id moves money at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub Uuid);

impl TransferId {
    /// The stream that holds this transfer's events.
    pub fn stream(self) -> StreamId {
        TRANSFERS.stream(self.0)
    }

    /// The transfer whose stream is `stream`, if it is a transfer stream.
    pub fn from_stream(stream: &StreamId) -> Option<Self> {
        let id = TRANSFERS.key_of(stream)?;
        Uuid::parse_str(id).ok().map(Self)
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What was asked: move `amount` of `currency` from one account to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The account paying.
    pub from: AccountId,
    /// The account paid.
    pub to: AccountId,
    /// How much.
    pub amount: Amount,
    /// In which currency; both accounts must hold it.
    pub currency: Currency,
}

/// What can happen to a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// The transfer was asked for.
    Requested(TransferRequest),
    /// The source account paid the amount out.
    Debited,
    /// The source account refused; nothing moved.
    DebitRefused {
        /// Why.
        reason: String,
    },
    /// The destination account was paid.
    Credited,
    /// The destination account refused; the source must be refunded.
    CreditRefused {
        /// Why.
        reason: String,
    },
    /// The source account got its money back.
    Refunded,
    /// The source account's money in flight settled; the transfer is done.
    Completed,
}

/// What a transfer can be asked to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Start a transfer.
    Request(TransferRequest),
    /// Record the outcome of a step.
    Record(StepOutcome),
}

/// A step of the process and whether the account took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// The step.
    pub step: Step,
    /// `Err(reason)` when the account refused it.
    pub result: Result<(), String>,
}

/// Why a transfer refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A transfer from an account to itself.
    #[error("a transfer needs two different accounts")]
    SameAccount,
    /// Requesting a transfer whose id is taken.
    #[error("this transfer was already requested")]
    AlreadyRequested,
    /// Recording a step that is not the one the transfer waits for.
    #[error("the transfer is {state}, not waiting for the {step:?} step")]
    UnexpectedStep {
        /// The step recorded.
        step: Step,
        /// Where the transfer is.
        state: &'static str,
    },
    /// A refusal of a step that cannot be refused without a bug (refund, settle).
    #[error("the {step:?} step cannot be refused, yet was: {reason}")]
    UnrefusableStep {
        /// The step.
        step: Step,
        /// The refusal.
        reason: String,
    },
}

/// The steps of the process, each an account command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Take the amount out of the source account.
    Debit,
    /// Pay it into the destination account.
    Credit,
    /// Mark the source's money in flight as delivered.
    Settle,
    /// Give the source its money back.
    Refund,
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TransferState {
    /// Not requested.
    #[default]
    Unrequested,
    /// Waiting for `next`.
    InProgress {
        /// What was asked.
        request: TransferRequest,
        /// The step it waits for.
        next: Step,
        /// Why the credit failed, once it has.
        failure: Option<String>,
    },
    /// The money arrived.
    Completed(TransferRequest),
    /// The money did not arrive; `compensated` when the source had been debited and refunded.
    Failed {
        /// What was asked.
        request: TransferRequest,
        /// Why it failed.
        reason: String,
        /// Whether the source was debited and then refunded.
        compensated: bool,
    },
}

impl TransferState {
    fn name(&self) -> &'static str {
        match self {
            Self::Unrequested => "not requested",
            Self::InProgress { .. } => "in progress",
            Self::Completed(_) => "completed",
            Self::Failed { .. } => "failed",
        }
    }
}

/// The transfer decider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transfer;

impl Decider for Transfer {
    type Command = TransferCommand;
    type Event = TransferEvent;
    type State = TransferState;
    type Error = TransferError;

    fn initial_state(&self) -> TransferState {
        TransferState::Unrequested
    }

    fn decide(
        &self,
        command: &TransferCommand,
        state: &TransferState,
    ) -> Result<Vec<TransferEvent>, TransferError> {
        use TransferEvent as E;
        let outcome = match (command, state) {
            (TransferCommand::Request(request), TransferState::Unrequested) => {
                if request.from == request.to {
                    return Err(TransferError::SameAccount);
                }
                return Ok(vec![E::Requested(*request)]);
            }
            (TransferCommand::Request(_), _) => return Err(TransferError::AlreadyRequested),
            (TransferCommand::Record(outcome), TransferState::InProgress { next, .. })
                if outcome.step == *next =>
            {
                outcome
            }
            (TransferCommand::Record(outcome), state) => {
                return Err(TransferError::UnexpectedStep {
                    step: outcome.step,
                    state: state.name(),
                });
            }
        };
        let event = match (&outcome.step, &outcome.result) {
            (Step::Debit, Ok(())) => E::Debited,
            (Step::Debit, Err(reason)) => E::DebitRefused {
                reason: reason.clone(),
            },
            (Step::Credit, Ok(())) => E::Credited,
            (Step::Credit, Err(reason)) => E::CreditRefused {
                reason: reason.clone(),
            },
            (Step::Settle, Ok(())) => E::Completed,
            (Step::Refund, Ok(())) => E::Refunded,
            (step @ (Step::Settle | Step::Refund), Err(reason)) => {
                return Err(TransferError::UnrefusableStep {
                    step: *step,
                    reason: reason.clone(),
                });
            }
        };
        Ok(vec![event])
    }

    fn evolve(&self, state: TransferState, event: &TransferEvent) -> TransferState {
        use TransferEvent as E;
        let TransferState::InProgress {
            request,
            next: waiting,
            failure,
        } = state
        else {
            return match (state, event) {
                (TransferState::Unrequested, E::Requested(request)) => TransferState::InProgress {
                    request: *request,
                    next: Step::Debit,
                    failure: None,
                },
                (other, _) => other,
            };
        };
        let next = |next| TransferState::InProgress {
            request,
            next,
            failure: failure.clone(),
        };
        match event {
            E::Debited => next(Step::Credit),
            E::Credited => next(Step::Settle),
            E::Completed => TransferState::Completed(request),
            E::DebitRefused { reason } => TransferState::Failed {
                request,
                reason: reason.clone(),
                compensated: false,
            },
            E::CreditRefused { reason } => TransferState::InProgress {
                request,
                next: Step::Refund,
                failure: Some(reason.clone()),
            },
            E::Refunded => TransferState::Failed {
                request,
                reason: failure.clone().unwrap_or_default(),
                compensated: true,
            },
            E::Requested(_) => next(waiting),
        }
    }

    fn is_terminal(&self, state: &TransferState) -> bool {
        matches!(
            state,
            TransferState::Completed(_) | TransferState::Failed { .. }
        )
    }
}

/// What a transfer waits for: a step, as a command to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextStep {
    /// The step.
    pub step: Step,
    /// The account that takes it.
    pub account: AccountId,
    /// The command that is the step.
    pub command: AccountCommand,
}

/// What transfer `transfer` in `state` waits for; `None` when it waits for nothing (not
/// requested, completed or failed).
pub fn next_step(state: &TransferState, transfer: TransferId) -> Option<NextStep> {
    let TransferState::InProgress { request, next, .. } = state else {
        return None;
    };
    let TransferRequest {
        from,
        to,
        amount,
        currency,
    } = *request;
    let (account, command) = match next {
        Step::Debit => (
            from,
            AccountCommand::DebitTransfer {
                transfer,
                amount,
                currency,
                to,
            },
        ),
        Step::Credit => (
            to,
            AccountCommand::CreditTransfer {
                transfer,
                amount,
                currency,
                from,
            },
        ),
        Step::Settle => (from, AccountCommand::SettleTransfer { transfer }),
        Step::Refund => (from, AccountCommand::RefundTransfer { transfer }),
    };
    Some(NextStep {
        step: *next,
        account,
        command,
    })
}

#[cfg(test)]
mod specs {
    #![allow(clippy::unwrap_used)]

    use decider_core::testing::spec;

    use super::*;

    const T: TransferId = TransferId(Uuid::from_u128(7));
    const ADA: AccountId = AccountId(Uuid::from_u128(1));
    const BOB: AccountId = AccountId(Uuid::from_u128(2));

    fn request() -> TransferRequest {
        TransferRequest {
            from: ADA,
            to: BOB,
            amount: Amount::new(25).unwrap(),
            currency: "EUR".parse().unwrap(),
        }
    }

    fn record(step: Step, result: Result<(), &str>) -> TransferCommand {
        TransferCommand::Record(StepOutcome {
            step,
            result: result.map_err(str::to_owned),
        })
    }

    fn state_after(events: impl IntoIterator<Item = TransferEvent>) -> TransferState {
        let events: Vec<_> = events.into_iter().collect();
        decider_core::fold(&Transfer, &events)
    }

    #[test]
    fn is_requested_once_between_two_accounts() {
        spec(Transfer)
            .when(TransferCommand::Request(request()))
            .then([TransferEvent::Requested(request())]);
        spec(Transfer)
            .given([TransferEvent::Requested(request())])
            .when(TransferCommand::Request(request()))
            .then_error(TransferError::AlreadyRequested);
        spec(Transfer)
            .when(TransferCommand::Request(TransferRequest {
                to: ADA,
                ..request()
            }))
            .then_error(TransferError::SameAccount);
    }

    #[test]
    fn the_happy_path_debits_credits_and_settles() {
        let mut history = vec![TransferEvent::Requested(request())];
        for (step, event) in [
            (Step::Debit, TransferEvent::Debited),
            (Step::Credit, TransferEvent::Credited),
            (Step::Settle, TransferEvent::Completed),
        ] {
            let waiting = next_step(&state_after(history.clone()), T);
            assert_eq!(waiting.map(|next| next.step), Some(step));
            spec(Transfer)
                .given(history.clone())
                .when(record(step, Ok(())))
                .then([event.clone()]);
            history.push(event);
        }
        let done = state_after(history);
        assert_eq!(done, TransferState::Completed(request()));
        assert!(Transfer.is_terminal(&done));
        assert_eq!(next_step(&done, T), None);
    }

    #[test]
    fn a_refused_debit_fails_with_nothing_to_compensate() {
        spec(Transfer)
            .given([TransferEvent::Requested(request())])
            .when(record(Step::Debit, Err("insufficient funds")))
            .then([TransferEvent::DebitRefused {
                reason: "insufficient funds".into(),
            }]);
        let failed = state_after([
            TransferEvent::Requested(request()),
            TransferEvent::DebitRefused {
                reason: "insufficient funds".into(),
            },
        ]);
        assert!(matches!(
            failed,
            TransferState::Failed {
                compensated: false,
                ..
            }
        ));
    }

    #[test]
    fn a_refused_credit_refunds_the_source() {
        let history = [
            TransferEvent::Requested(request()),
            TransferEvent::Debited,
            TransferEvent::CreditRefused {
                reason: "account closed".into(),
            },
        ];
        assert_eq!(
            next_step(&state_after(history.clone()), T),
            Some(NextStep {
                step: Step::Refund,
                account: ADA,
                command: AccountCommand::RefundTransfer { transfer: T }
            })
        );
        spec(Transfer)
            .given(history.clone())
            .when(record(Step::Refund, Ok(())))
            .then([TransferEvent::Refunded]);
        let failed = state_after(history.into_iter().chain([TransferEvent::Refunded]));
        assert_eq!(
            failed,
            TransferState::Failed {
                request: request(),
                reason: "account closed".into(),
                compensated: true
            }
        );
    }

    #[test]
    fn steps_are_taken_in_order_only() {
        spec(Transfer)
            .given([TransferEvent::Requested(request())])
            .when(record(Step::Credit, Ok(())))
            .then_error(TransferError::UnexpectedStep {
                step: Step::Credit,
                state: "in progress",
            });
        spec(Transfer)
            .when(record(Step::Debit, Ok(())))
            .then_error_matches(|e| matches!(e, TransferError::UnexpectedStep { .. }));
    }

    #[test]
    fn refunds_and_settlements_cannot_be_refused() {
        spec(Transfer)
            .given([
                TransferEvent::Requested(request()),
                TransferEvent::Debited,
                TransferEvent::Credited,
            ])
            .when(record(Step::Settle, Err("no")))
            .then_error_matches(|e| matches!(e, TransferError::UnrefusableStep { .. }));
    }

    #[test]
    fn each_step_goes_to_the_right_account() {
        let debited = state_after([TransferEvent::Requested(request()), TransferEvent::Debited]);
        assert_eq!(
            next_step(&debited, T),
            Some(NextStep {
                step: Step::Credit,
                account: BOB,
                command: AccountCommand::CreditTransfer {
                    transfer: T,
                    amount: request().amount,
                    currency: request().currency,
                    from: ADA,
                }
            })
        );
        let requested = state_after([TransferEvent::Requested(request())]);
        assert!(matches!(
            next_step(&requested, T),
            Some(NextStep {
                step: Step::Debit,
                account: ADA,
                command: AccountCommand::DebitTransfer { .. }
            })
        ));
    }
}

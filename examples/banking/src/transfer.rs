//! The transfer: a process across two accounts, with compensation.
//!
//! ```text
//! requested ──debit source──▶ debited ──credit destination──▶ credited ──settle──▶ completed
//!     │ refused                  │ refused
//!     ▼                          ▼
//!   failed              crediting failed ──refund source──▶ failed (compensated)
//! ```
//!
//! The transfer's own stream records where it is ([`Transfer`], a [`Decider`], with one small
//! decide function per command); [`next_step`] says, from that state alone, which account
//! command comes next, and [`record`] which command records the account's answer. All are pure:
//! the [`process`](crate::process) module runs the steps against the store. Every step is sent with
//! an idempotency key made of the transfer id and the step, so however often a step is retried
//! or redelivered, it moves money once.

use std::fmt;

use decider_core::{Category, Decider, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{AccountCommand, AccountError, AccountId};
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
    /// What leaves `from` and arrives at `to`, in minor units of `currency`.
    pub amount: Amount,
    /// In which currency; both accounts must hold it.
    pub currency: Currency,
}

/// What can happen to a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// The transfer was asked for; always its first event.
    Requested(TransferRequest),
    /// The source account paid the amount out; it is in flight.
    Debited,
    /// The source account refused; nothing moved, and the transfer failed.
    DebitRefused {
        /// Why the source refused.
        reason: Refusal,
    },
    /// The destination account was paid.
    Credited,
    /// The destination account refused; the source must be refunded.
    CreditRefused {
        /// Why the destination refused.
        reason: Refusal,
    },
    /// The source account got its money back; the transfer failed, compensated.
    Refunded,
    /// The source account's money in flight settled; the transfer is done.
    Completed,
}

/// Why an account refused a step of a transfer, as the transfer's events record it.
///
/// Stored as the account's [`AccountError`] (`{"InsufficientFunds": {..}}`, `"Closed"`).
/// Transfers recorded before refusals were typed hold the refusal's message instead: a message
/// that names a refusal without data ("the account is closed") reads as that refusal, any other
/// as [`Described`](Self::Described).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(untagged, from = "StoredRefusal")]
pub enum Refusal {
    /// The account's refusal.
    #[error(transparent)]
    Account(AccountError),
    /// A refusal recorded by an older version of the bank, as its message.
    #[error("{0}")]
    Described(String),
}

/// A refusal as stored: typed, or an older version's message.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredRefusal {
    Typed(AccountError),
    Message(String),
}

impl From<StoredRefusal> for Refusal {
    fn from(stored: StoredRefusal) -> Self {
        match stored {
            StoredRefusal::Typed(refusal) => Self::Account(refusal),
            StoredRefusal::Message(message) => [
                AccountError::NotOpen,
                AccountError::AlreadyOpen,
                AccountError::Closed,
                AccountError::InvalidOwner,
                AccountError::BalanceOverflow,
            ]
            .into_iter()
            .find(|refusal| refusal.to_string() == message)
            .map_or(Self::Described(message), Self::Account),
        }
    }
}

impl From<AccountError> for Refusal {
    fn from(refusal: AccountError) -> Self {
        Self::Account(refusal)
    }
}

/// What a transfer can be asked to record. The process manager sends the `Record…` commands,
/// one per answer of an account to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Start a transfer.
    Request(TransferRequest),
    /// Record how the source answered the debit.
    RecordDebit(Result<(), Refusal>),
    /// Record how the destination answered the credit.
    RecordCredit(Result<(), Refusal>),
    /// Record how the source answered the settlement (which it cannot refuse).
    RecordSettlement(Result<(), Refusal>),
    /// Record how the source answered the refund (which it cannot refuse).
    RecordRefund(Result<(), Refusal>),
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
    #[error("the transfer is {state}, not waiting for the {step} step")]
    UnexpectedStep {
        /// The step recorded.
        step: Step,
        /// Where the transfer is ([`TransferState::status`]).
        state: &'static str,
    },
    /// A refusal of a step that cannot be refused without a bug (refund, settle).
    #[error("the {step} step cannot be refused, yet was: {reason}")]
    UnrefusableStep {
        /// The step.
        step: Step,
        /// The refusal.
        reason: Refusal,
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

impl Step {
    /// The step's name, as idempotency keys hold it: changing it would let a step already taken
    /// be taken again.
    pub fn name(self) -> &'static str {
        match self {
            Self::Debit => "Debit",
            Self::Credit => "Credit",
            Self::Settle => "Settle",
            Self::Refund => "Refund",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TransferState {
    /// Not requested.
    #[default]
    Unrequested,
    /// Requested; waiting for the source's debit.
    Requested(TransferRequest),
    /// The money left the source; waiting for the destination's credit.
    Debited(TransferRequest),
    /// The money arrived; waiting for the source to settle it.
    Credited(TransferRequest),
    /// The destination refused; waiting for the source's refund.
    Refunding {
        /// What was asked.
        request: TransferRequest,
        /// Why the destination refused.
        reason: Refusal,
    },
    /// Done: the money moved.
    Completed(TransferRequest),
    /// The money did not arrive; `compensated` when the source had been debited and refunded.
    Failed {
        /// What was asked.
        request: TransferRequest,
        /// Why the source or the destination refused.
        reason: Refusal,
        /// Whether the source was debited and then refunded.
        compensated: bool,
    },
}

impl TransferState {
    /// Where it is, as one stable word: `unknown`, `requested`, `debited`, `credited`,
    /// `refunding`, `completed` or `failed`.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Unrequested => "unknown",
            Self::Requested(_) => "requested",
            Self::Debited(_) => "debited",
            Self::Credited(_) => "credited",
            Self::Refunding { .. } => "refunding",
            Self::Completed(_) => "completed",
            Self::Failed { .. } => "failed",
        }
    }

    /// What was asked, once it was.
    pub fn request(&self) -> Option<&TransferRequest> {
        match self {
            Self::Unrequested => None,
            Self::Requested(request)
            | Self::Debited(request)
            | Self::Credited(request)
            | Self::Refunding { request, .. }
            | Self::Completed(request)
            | Self::Failed { request, .. } => Some(request),
        }
    }

    /// The step it waits for; `None` when it waits for nothing (not requested, completed or
    /// failed).
    pub fn waiting_for(&self) -> Option<Step> {
        match self {
            Self::Requested(_) => Some(Step::Debit),
            Self::Debited(_) => Some(Step::Credit),
            Self::Credited(_) => Some(Step::Settle),
            Self::Refunding { .. } => Some(Step::Refund),
            Self::Unrequested | Self::Completed(_) | Self::Failed { .. } => None,
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
        use TransferCommand as C;
        match command {
            C::Request(request) => request_transfer(state, request),
            C::RecordDebit(answer) => record_debit(state, answer),
            C::RecordCredit(answer) => record_credit(state, answer),
            C::RecordSettlement(answer) => record_settlement(state, answer),
            C::RecordRefund(answer) => record_refund(state, answer),
        }
    }

    fn evolve(&self, state: TransferState, event: &TransferEvent) -> TransferState {
        use TransferEvent as E;
        use TransferState as S;
        match (state, event) {
            (S::Unrequested, E::Requested(request)) => S::Requested(*request),
            (S::Requested(request), E::Debited) => S::Debited(request),
            (S::Requested(request), E::DebitRefused { reason }) => S::Failed {
                request,
                reason: reason.clone(),
                compensated: false,
            },
            (S::Debited(request), E::Credited) => S::Credited(request),
            (S::Debited(request), E::CreditRefused { reason }) => S::Refunding {
                request,
                reason: reason.clone(),
            },
            (S::Credited(request), E::Completed) => S::Completed(request),
            (S::Refunding { request, reason }, E::Refunded) => S::Failed {
                request,
                reason,
                compensated: true,
            },
            // Events `decide` never produces in these states: the history stands as it is.
            (state, _) => state,
        }
    }

    fn is_terminal(&self, state: &TransferState) -> bool {
        matches!(
            state,
            TransferState::Completed(_) | TransferState::Failed { .. }
        )
    }
}

fn request_transfer(
    state: &TransferState,
    request: &TransferRequest,
) -> Result<Vec<TransferEvent>, TransferError> {
    if *state != TransferState::Unrequested {
        return Err(TransferError::AlreadyRequested);
    }
    if request.from == request.to {
        return Err(TransferError::SameAccount);
    }
    Ok(vec![TransferEvent::Requested(*request)])
}

fn record_debit(
    state: &TransferState,
    answer: &Result<(), Refusal>,
) -> Result<Vec<TransferEvent>, TransferError> {
    expect_step(state, Step::Debit)?;
    Ok(vec![match answer {
        Ok(()) => TransferEvent::Debited,
        Err(reason) => TransferEvent::DebitRefused {
            reason: reason.clone(),
        },
    }])
}

fn record_credit(
    state: &TransferState,
    answer: &Result<(), Refusal>,
) -> Result<Vec<TransferEvent>, TransferError> {
    expect_step(state, Step::Credit)?;
    Ok(vec![match answer {
        Ok(()) => TransferEvent::Credited,
        Err(reason) => TransferEvent::CreditRefused {
            reason: reason.clone(),
        },
    }])
}

fn record_settlement(
    state: &TransferState,
    answer: &Result<(), Refusal>,
) -> Result<Vec<TransferEvent>, TransferError> {
    expect_step(state, Step::Settle)?;
    unrefusable(Step::Settle, answer)?;
    Ok(vec![TransferEvent::Completed])
}

fn record_refund(
    state: &TransferState,
    answer: &Result<(), Refusal>,
) -> Result<Vec<TransferEvent>, TransferError> {
    expect_step(state, Step::Refund)?;
    unrefusable(Step::Refund, answer)?;
    Ok(vec![TransferEvent::Refunded])
}

fn expect_step(state: &TransferState, step: Step) -> Result<(), TransferError> {
    if state.waiting_for() == Some(step) {
        Ok(())
    } else {
        Err(TransferError::UnexpectedStep {
            step,
            state: state.status(),
        })
    }
}

fn unrefusable(step: Step, answer: &Result<(), Refusal>) -> Result<(), TransferError> {
    answer
        .clone()
        .map_err(|reason| TransferError::UnrefusableStep { step, reason })
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
    let step = state.waiting_for()?;
    let &TransferRequest {
        from,
        to,
        amount,
        currency,
    } = state.request()?;
    let (account, command) = match step {
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
        step,
        account,
        command,
    })
}

/// The command that records on the transfer how its account answered `step`.
pub fn record(step: Step, answer: Result<(), Refusal>) -> TransferCommand {
    match step {
        Step::Debit => TransferCommand::RecordDebit(answer),
        Step::Credit => TransferCommand::RecordCredit(answer),
        Step::Settle => TransferCommand::RecordSettlement(answer),
        Step::Refund => TransferCommand::RecordRefund(answer),
    }
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

    fn refused(refusal: AccountError) -> Result<(), Refusal> {
        Err(Refusal::Account(refusal))
    }

    fn insufficient() -> AccountError {
        AccountError::InsufficientFunds {
            balance: 0,
            overdraft_limit: 0,
            requested: Amount::new(25).unwrap(),
        }
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
            .when(TransferCommand::RecordDebit(refused(insufficient())))
            .then([TransferEvent::DebitRefused {
                reason: insufficient().into(),
            }]);
        let failed = state_after([
            TransferEvent::Requested(request()),
            TransferEvent::DebitRefused {
                reason: insufficient().into(),
            },
        ]);
        assert_eq!(
            failed,
            TransferState::Failed {
                request: request(),
                reason: insufficient().into(),
                compensated: false,
            }
        );
    }

    #[test]
    fn a_refused_credit_refunds_the_source() {
        let history = [
            TransferEvent::Requested(request()),
            TransferEvent::Debited,
            TransferEvent::CreditRefused {
                reason: AccountError::Closed.into(),
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
            .when(TransferCommand::RecordRefund(Ok(())))
            .then([TransferEvent::Refunded]);
        let failed = state_after(history.into_iter().chain([TransferEvent::Refunded]));
        assert_eq!(
            failed,
            TransferState::Failed {
                request: request(),
                reason: AccountError::Closed.into(),
                compensated: true
            }
        );
    }

    #[test]
    fn steps_are_taken_in_order_only() {
        spec(Transfer)
            .given([TransferEvent::Requested(request())])
            .when(TransferCommand::RecordCredit(Ok(())))
            .then_error(TransferError::UnexpectedStep {
                step: Step::Credit,
                state: "requested",
            });
        spec(Transfer)
            .when(TransferCommand::RecordDebit(Ok(())))
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
            .when(TransferCommand::RecordSettlement(refused(
                AccountError::Closed,
            )))
            .then_error(TransferError::UnrefusableStep {
                step: Step::Settle,
                reason: AccountError::Closed.into(),
            });
        spec(Transfer)
            .given([
                TransferEvent::Requested(request()),
                TransferEvent::Debited,
                TransferEvent::CreditRefused {
                    reason: AccountError::Closed.into(),
                },
            ])
            .when(TransferCommand::RecordRefund(refused(
                AccountError::NotOpen,
            )))
            .then_error_matches(|e| matches!(e, TransferError::UnrefusableStep { .. }));
    }

    #[test]
    fn a_refused_credit_is_recorded_with_its_reason() {
        let mismatch = AccountError::CurrencyMismatch {
            account: "USD".parse().unwrap(),
            transfer: "EUR".parse().unwrap(),
        };
        spec(Transfer)
            .given([TransferEvent::Requested(request()), TransferEvent::Debited])
            .when(TransferCommand::RecordCredit(refused(mismatch.clone())))
            .then([TransferEvent::CreditRefused {
                reason: mismatch.into(),
            }]);
        spec(Transfer)
            .given([TransferEvent::Requested(request()), TransferEvent::Debited])
            .when(TransferCommand::RecordCredit(Ok(())))
            .then([TransferEvent::Credited]);
    }

    #[test]
    fn a_finished_transfer_records_nothing_more() {
        spec(Transfer)
            .given([
                TransferEvent::Requested(request()),
                TransferEvent::DebitRefused {
                    reason: insufficient().into(),
                },
            ])
            .when(TransferCommand::RecordDebit(Ok(())))
            .then_error(TransferError::UnexpectedStep {
                step: Step::Debit,
                state: "failed",
            });
    }

    #[test]
    fn refusals_are_stored_typed_and_old_sentences_still_read() {
        let refused = TransferEvent::CreditRefused {
            reason: AccountError::Closed.into(),
        };
        let json = serde_json::to_string(&refused).unwrap();
        assert_eq!(json, r#"{"CreditRefused":{"reason":"Closed"}}"#);
        assert_eq!(
            serde_json::from_str::<TransferEvent>(&json).unwrap(),
            refused
        );
        let typed = TransferEvent::DebitRefused {
            reason: insufficient().into(),
        };
        let json = serde_json::to_string(&typed).unwrap();
        assert_eq!(
            json,
            r#"{"DebitRefused":{"reason":{"InsufficientFunds":{"balance":0,"overdraft_limit":0,"requested":25}}}}"#
        );
        assert_eq!(serde_json::from_str::<TransferEvent>(&json).unwrap(), typed);
        // As versions before typed refusals wrote them.
        let message = "insufficient funds: balance 0, overdraft limit 0, requested 25";
        for (old, reason) in [
            (
                r#"{"DebitRefused":{"reason":"insufficient funds: balance 0, overdraft limit 0, requested 25"}}"#,
                Refusal::Described(message.into()),
            ),
            (
                r#"{"CreditRefused":{"reason":"the account is closed"}}"#,
                Refusal::Account(AccountError::Closed),
            ),
            (
                r#"{"DebitRefused":{"reason":"the account does not exist"}}"#,
                Refusal::Account(AccountError::NotOpen),
            ),
        ] {
            let event: TransferEvent = serde_json::from_str(old).unwrap();
            let (TransferEvent::DebitRefused { reason: read }
            | TransferEvent::CreditRefused { reason: read }) = event
            else {
                panic!("not a refusal: {event:?}");
            };
            assert_eq!(read, reason);
        }
        assert_eq!(Refusal::Described(message.into()).to_string(), message);
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

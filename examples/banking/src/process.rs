//! The transfer process manager: carries each requested transfer out against the accounts.
//!
//! A transfer is a [`Process`]: its own stream ([`Transfer`]) records where it is,
//! [`next_step`] says which account command comes next, and each account's answer — taken, or
//! refused with its [`AccountError`] — is recorded on the transfer by the command [`record`]
//! makes. decider-core's [`ProcessHandler`](decider_core::projection::ProcessHandler) runs it
//! as a projection over the transfers' `Requested` events: it drives each transfer to its end
//! before the checkpoint moves past the request. Delivery is at least once (a crash between two
//! steps redelivers the batch), so every step carries an idempotency key of the transfer id and
//! the step (`<transfer>/Debit`, …): a step that already happened is answered from the
//! account's stream, never done twice.
//!
//! Two managers must not drive one transfer at the same time (one could record a refused debit
//! while the other's retry of it succeeds); the application runs one per store, behind a lease
//! where the store has them.

use decider_core::{Process, ProcessStep, Refused, StreamId};

use crate::account::{Account, AccountCommand, AccountError};
use crate::transfer::{
    NextStep, Step, Transfer, TransferCommand, TransferId, TransferState, next_step, record,
};

/// The transfer process: what a transfer asks of the accounts, and how their answers are
/// recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferProcess;

impl Process for TransferProcess {
    type Own = Transfer;
    type Target = Account;
    type Step = Step;

    fn next_step(
        &self,
        process: &StreamId,
        state: &TransferState,
    ) -> Option<ProcessStep<Step, AccountCommand>> {
        let transfer = TransferId::from_stream(process)?;
        let NextStep {
            step,
            account,
            command,
        } = next_step(state, transfer)?;
        Some(ProcessStep {
            step,
            stream: account.stream(),
            command,
            key: format!("{transfer}/{}", step.name()),
        })
    }

    fn record(&self, step: Step, answer: Result<(), Refused<AccountError>>) -> TransferCommand {
        let answer = answer.map_err(|refused| match refused {
            Refused::Rejected(refusal) => refusal.into(),
            Refused::Terminal => AccountError::Closed.into(),
        });
        record(step, answer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;
    use crate::account::AccountId;
    use crate::money::Amount;
    use crate::transfer::{Refusal, TransferRequest};

    const T: TransferId = TransferId(Uuid::from_u128(7));
    const ADA: AccountId = AccountId(Uuid::from_u128(1));
    const BOB: AccountId = AccountId(Uuid::from_u128(2));

    fn requested() -> TransferState {
        TransferState::Requested(TransferRequest {
            from: ADA,
            to: BOB,
            amount: Amount::new(25).unwrap(),
            currency: "EUR".parse().unwrap(),
        })
    }

    #[test]
    fn each_step_is_keyed_by_the_transfer_and_the_step() {
        let step = TransferProcess
            .next_step(&T.stream(), &requested())
            .unwrap();
        assert_eq!(step.step, Step::Debit);
        assert_eq!(step.stream, ADA.stream());
        assert_eq!(step.key, format!("{T}/Debit"));
        assert!(matches!(step.command, AccountCommand::DebitTransfer { .. }));
        assert_eq!(
            TransferProcess.next_step(&StreamId::new("other-1").unwrap(), &requested()),
            None
        );
    }

    #[test]
    fn a_closed_account_is_recorded_as_a_closed_refusal() {
        assert_eq!(
            TransferProcess.record(Step::Debit, Err(Refused::Terminal)),
            TransferCommand::RecordDebit(Err(Refusal::Account(AccountError::Closed)))
        );
        assert_eq!(
            TransferProcess.record(Step::Debit, Ok(())),
            TransferCommand::RecordDebit(Ok(()))
        );
    }
}

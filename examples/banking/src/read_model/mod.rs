//! The read side: each account's balance and its ledger, built from account events by a
//! projection runner.
//!
//! [`apply`] is the whole logic, pure and shared: an account's view and an event in, the next
//! view and the ledger line out. [`memory`] keeps the views in process; [`sqlite`] and
//! [`postgres`] keep them in tables written in the same transaction as the projection's
//! checkpoint (exactly once).
//! Both skip an event at or below the revision a view has reached, so a batch delivered twice
//! changes nothing.

pub mod memory;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::time::UNIX_EPOCH;

use decider_core::projection::SinkError;
use decider_core::{Codec, JsonCodec, Position, RecordedEvent, StoreError};
use serde::Serialize;

use crate::account::{AccountEvent, AccountId};
use crate::transfer::TransferId;

/// The name of the projection that keeps the read models (and of its checkpoint).
pub const PROJECTION: &str = "banking-accounts";

/// An account as the read model has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    /// The account.
    pub id: AccountId,
    /// Who holds it.
    pub owner: String,
    /// Its currency.
    pub currency: String,
    /// How far below zero it may go, in minor units.
    pub overdraft_limit: i64,
    /// Its balance, in minor units.
    pub balance: i64,
    /// Whether it is closed.
    pub closed: bool,
    /// The revision of the account's stream this view has reached.
    pub version: u64,
    /// The global position of that event.
    pub position: Position,
}

/// What kind of movement a ledger line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Paid in.
    Deposit,
    /// Paid out.
    Withdrawal,
    /// Paid out to another account.
    TransferOut,
    /// Paid in from another account.
    TransferIn,
    /// A failed transfer's money coming back.
    TransferRefund,
}

impl MovementKind {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
            Self::TransferOut => "transfer_out",
            Self::TransferIn => "transfer_in",
            Self::TransferRefund => "transfer_refund",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Deposit,
            Self::Withdrawal,
            Self::TransferOut,
            Self::TransferIn,
            Self::TransferRefund,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// One movement of money on an account, with the balance after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// The revision of the event in the account's stream.
    pub revision: u64,
    /// What moved.
    pub kind: MovementKind,
    /// How much, signed: positive in, negative out (minor units).
    pub amount: i64,
    /// The balance after this movement.
    pub balance: i64,
    /// The transfer, for transfer movements.
    pub transfer: Option<TransferId>,
    /// The other account of a transfer.
    pub counterparty: Option<AccountId>,
    /// When the store recorded it, in milliseconds since the Unix epoch.
    pub recorded_at_ms: u64,
}

/// Applies one account event to the account's view (`None` before its first event). Returns
/// `None` for an event the view has already seen (a redelivery); otherwise the next view and,
/// when money moved, the ledger line.
pub fn apply(
    view: Option<&AccountView>,
    recorded: &RecordedEvent,
    event: &AccountEvent,
) -> Option<(AccountView, Option<LedgerEntry>)> {
    use AccountEvent as E;
    if view.is_some_and(|view| recorded.revision <= view.version) {
        return None;
    }
    let id = AccountId::from_stream(&recorded.stream)?;
    let mut next = match (view, event) {
        (
            None,
            E::Opened {
                owner,
                currency,
                overdraft_limit,
            },
        ) => AccountView {
            id,
            owner: owner.clone(),
            currency: currency.to_string(),
            overdraft_limit: overdraft_limit.map_or(0, |limit| limit.minor_units()),
            balance: 0,
            closed: false,
            version: recorded.revision,
            position: recorded.position,
        },
        (Some(view), _) => view.clone(),
        // An account's first event is always its opening.
        (None, _) => return None,
    };
    next.version = recorded.revision;
    next.position = recorded.position;
    let (kind, amount, transfer, counterparty) = match *event {
        E::Deposited { amount } => (MovementKind::Deposit, amount.minor_units(), None, None),
        E::Withdrawn { amount } => (MovementKind::Withdrawal, -amount.minor_units(), None, None),
        E::TransferDebited {
            transfer,
            amount,
            to,
        } => (
            MovementKind::TransferOut,
            -amount.minor_units(),
            Some(transfer),
            Some(to),
        ),
        E::TransferCredited {
            transfer,
            amount,
            from,
        } => (
            MovementKind::TransferIn,
            amount.minor_units(),
            Some(transfer),
            Some(from),
        ),
        E::TransferRefunded { transfer, amount } => (
            MovementKind::TransferRefund,
            amount.minor_units(),
            Some(transfer),
            None,
        ),
        E::Closed => {
            next.closed = true;
            return Some((next, None));
        }
        E::Opened { .. } | E::TransferSettled { .. } => return Some((next, None)),
    };
    // The decider checked every balance before the event was written.
    next.balance = next.balance.saturating_add(amount);
    let entry = LedgerEntry {
        revision: recorded.revision,
        kind,
        amount,
        balance: next.balance,
        transfer,
        counterparty,
        recorded_at_ms: recorded
            .recorded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64),
    };
    Some((next, Some(entry)))
}

/// The events of `batch` that belong to an account, decoded, each with its account: what every
/// read model applies. An event that does not decode is poison, named by its index in the batch.
pub fn account_events(
    batch: &[RecordedEvent],
) -> Result<Vec<(AccountId, &RecordedEvent, AccountEvent)>, SinkError> {
    let codec = JsonCodec::<AccountEvent>::new();
    let mut events = Vec::with_capacity(batch.len());
    for (index, recorded) in batch.iter().enumerate() {
        let event = codec.decode(recorded).map_err(|error| SinkError::Poison {
            index,
            reason: error.to_string(),
        })?;
        if let Some(id) = AccountId::from_stream(&recorded.stream) {
            events.push((id, recorded, event));
        }
    }
    Ok(events)
}

/// What the HTTP API reads: the two read models and how far they have got.
pub trait ReadModels: Send + Sync + 'static {
    /// The account's view, if the read model has it.
    fn account(
        &self,
        id: AccountId,
    ) -> impl Future<Output = Result<Option<AccountView>, StoreError>> + Send;

    /// The account's ledger, oldest first (empty for an unknown account).
    fn ledger(
        &self,
        id: AccountId,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, StoreError>> + Send;

    /// The position of the last account event the read models hold.
    fn position(&self) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;
}

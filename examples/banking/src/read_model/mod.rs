//! The read side: each account's balance and its ledger, built from account events by a
//! projection runner.
//!
//! [`AccountSummary`] is the whole logic, a pure [`View`] shared by every store: an account's
//! view and an event in, the next view out; [`apply`] adds the ledger line the event makes. [`memory`] keeps the views in process; `sqlite` and
//! `postgres` (each with the cargo feature of its name, so not linked here) keep them in tables
//! written in the same transaction as the projection's checkpoint (exactly once).
//! Both skip an event at or below the revision a view has reached, so a batch delivered twice
//! changes nothing.

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::future::Future;
use std::time::UNIX_EPOCH;

use decider_core::projection::SinkError;
use decider_core::{JsonCodec, Position, Recorded, RecordedEvent, StoreError, View};
use serde::{Serialize, Serializer};

use crate::account::{AccountEvent, AccountId};
use crate::transfer::TransferId;

/// The name of the projection that keeps the read models: the blue/green group of their
/// versions, and version 1's projection (and checkpoint) name. Version `n > 1` is built by
/// `banking-accounts@v<n>` ([`version_name`](decider_core::projection::version_name)).
pub const PROJECTION: &str = "banking-accounts";

/// The tables (or keys) that hold `version` of the read models: `banking_accounts` and
/// `banking_ledger` for version 1, the same with `_v<n>` after for version `n`.
///
/// ```
/// assert_eq!(banking::read_model::tables(1), ("banking_accounts".into(), "banking_ledger".into()));
/// assert_eq!(banking::read_model::tables(2).1, "banking_ledger_v2");
/// ```
pub fn tables(version: u32) -> (String, String) {
    let suffix = if version <= 1 {
        String::new()
    } else {
        format!("_v{version}")
    };
    (
        format!("banking_accounts{suffix}"),
        format!("banking_ledger{suffix}"),
    )
}

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
    /// The global position of that event, shown as a write's answer shows it (`"3/3"`).
    #[serde(serialize_with = "as_text")]
    pub position: Position,
}

fn as_text<S: Serializer>(position: &Position, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(position)
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

/// An account's view, folded from its events: a [`View`] of [`Recorded`] account events.
///
/// An event at or below the revision the view has reached changes nothing, so a batch
/// delivered twice leaves the view as it was.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountSummary;

impl View for AccountSummary {
    type Event = Recorded<AccountEvent>;
    type State = Option<AccountView>;

    fn initial_state(&self) -> Option<AccountView> {
        None
    }

    fn evolve(
        &self,
        view: Option<AccountView>,
        recorded: &Recorded<AccountEvent>,
    ) -> Option<AccountView> {
        let mut view = match (view, &recorded.event) {
            (Some(view), _) if recorded.revision <= view.version => return Some(view),
            (Some(view), _) => view,
            (
                None,
                AccountEvent::Opened {
                    owner,
                    currency,
                    overdraft_limit,
                },
            ) => AccountView {
                id: AccountId::from_stream(&recorded.stream)?,
                owner: owner.clone(),
                currency: currency.to_string(),
                overdraft_limit: overdraft_limit.map_or(0, |limit| limit.minor_units()),
                balance: 0,
                closed: false,
                version: recorded.revision,
                position: recorded.position,
            },
            // An account's first event is always its opening.
            (None, _) => return None,
        };
        view.version = recorded.revision;
        view.position = recorded.position;
        if let Some(movement) = Movement::of(&recorded.event) {
            // The decider checked every balance before the event was written.
            view.balance = view.balance.saturating_add(movement.amount);
        }
        if recorded.event == AccountEvent::Closed {
            view.closed = true;
        }
        Some(view)
    }
}

/// The money an account event moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Movement {
    kind: MovementKind,
    /// Signed: positive in, negative out (minor units).
    amount: i64,
    transfer: Option<TransferId>,
    counterparty: Option<AccountId>,
}

impl Movement {
    /// What `event` moves; `None` when it moves no money.
    fn of(event: &AccountEvent) -> Option<Self> {
        use AccountEvent as E;
        let (kind, amount, transfer, counterparty) = match *event {
            E::Deposited { amount } => (MovementKind::Deposit, amount.minor_units(), None, None),
            E::Withdrawn { amount } => {
                (MovementKind::Withdrawal, -amount.minor_units(), None, None)
            }
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
            E::Opened { .. } | E::TransferSettled { .. } | E::Closed => return None,
        };
        Some(Self {
            kind,
            amount,
            transfer,
            counterparty,
        })
    }
}

/// Applies one account event to the account's view (`None` before its first event), through
/// [`AccountSummary`]. Returns `None` for an event the view has already seen (a redelivery) or
/// cannot take; otherwise the next view and, when money moved, the ledger line.
pub fn apply(
    view: Option<&AccountView>,
    recorded: &Recorded<AccountEvent>,
) -> Option<(AccountView, Option<LedgerEntry>)> {
    if view.is_some_and(|view| recorded.revision <= view.version) {
        return None;
    }
    let next = AccountSummary.evolve(view.cloned(), recorded)?;
    let entry = Movement::of(&recorded.event).map(|movement| LedgerEntry {
        revision: recorded.revision,
        kind: movement.kind,
        amount: movement.amount,
        balance: next.balance,
        transfer: movement.transfer,
        counterparty: movement.counterparty,
        recorded_at_ms: recorded
            .recorded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64),
    });
    Some((next, entry))
}

/// The events of `batch` that belong to an account, decoded, each with its account: what every
/// read model applies. An event that does not decode is poison, named by its index in the batch.
pub fn account_events(
    batch: &[RecordedEvent],
) -> Result<Vec<(AccountId, Recorded<AccountEvent>)>, SinkError> {
    let codec = JsonCodec::<AccountEvent>::new();
    let mut events = Vec::with_capacity(batch.len());
    for (index, recorded) in batch.iter().enumerate() {
        let event = Recorded::decode(&codec, recorded).map_err(|error| SinkError::Poison {
            index,
            reason: error.to_string(),
        })?;
        if let Some(id) = AccountId::from_stream(&recorded.stream) {
            events.push((id, event));
        }
    }
    Ok(events)
}

/// An account's view and its ledger, read together: the balance is the last line's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// The account's view.
    pub account: AccountView,
    /// Its ledger, oldest first.
    pub entries: Vec<LedgerEntry>,
}

/// What the bank reads: the versions of the read models, each version's views and ledgers, and
/// how far they have got.
///
/// Versions come from blue/green rebuilds: a new version builds into its own tables
/// ([`tables`]) beside the live one, and readers read the [active](Self::active_version) one.
pub trait ReadModels: Send + Sync + 'static {
    /// The version readers read now: 1 until a rebuild switches to a later one.
    fn active_version(&self) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// The account's view in `version`, if that version has it.
    fn account(
        &self,
        version: u32,
        id: AccountId,
    ) -> impl Future<Output = Result<Option<AccountView>, StoreError>> + Send;

    /// The account's view and ledger in `version`, read from one snapshot (so they agree), if
    /// that version has the account.
    fn statement(
        &self,
        version: u32,
        id: AccountId,
    ) -> impl Future<Output = Result<Option<Statement>, StoreError>> + Send;

    /// The partition count `version` is built with, as its runners recorded it (`None` before
    /// any did): where a read-your-writes wait finds the partition of an account.
    fn partition_count(
        &self,
        version: u32,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send;

    /// Drops `version`'s tables: the hook a rebuild calls once readers have left it.
    fn drop_version(&self, version: u32) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The checkpoint of `projection` (the accounts projection, or the partition of it that
    /// holds an account's stream): the position of the last of its events the read models
    /// hold. A read-your-writes wait compares it with a write's position.
    fn position(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;
}

#[cfg(test)]
mod specs {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, SystemTime};

    use decider_core::testing::view_spec;
    use uuid::Uuid;

    use super::*;
    use crate::money::Amount;

    const ADA: AccountId = AccountId(Uuid::from_u128(1));
    const BOB: AccountId = AccountId(Uuid::from_u128(2));
    const T: TransferId = TransferId(Uuid::from_u128(3));

    fn at(revision: u64, event: AccountEvent) -> Recorded<AccountEvent> {
        Recorded {
            event,
            stream: ADA.stream(),
            revision,
            position: Position::new(10 + revision, 10 + revision),
            recorded_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_000 + revision),
        }
    }

    fn opened() -> Recorded<AccountEvent> {
        at(
            0,
            AccountEvent::Opened {
                owner: "Ada".into(),
                currency: "EUR".parse().unwrap(),
                overdraft_limit: Amount::new(20).ok(),
            },
        )
    }

    fn deposited(revision: u64, units: u64) -> Recorded<AccountEvent> {
        at(
            revision,
            AccountEvent::Deposited {
                amount: Amount::new(units).unwrap(),
            },
        )
    }

    fn view(balance: i64, version: u64, closed: bool) -> AccountView {
        AccountView {
            id: ADA,
            owner: "Ada".into(),
            currency: "EUR".into(),
            overdraft_limit: 20,
            balance,
            closed,
            version,
            position: Position::new(10 + version, 10 + version),
        }
    }

    #[test]
    fn a_view_starts_at_the_opening_and_follows_the_money() {
        view_spec(AccountSummary).given([]).then_state(None);
        view_spec(AccountSummary)
            .given([
                opened(),
                deposited(1, 30),
                at(
                    2,
                    AccountEvent::TransferDebited {
                        transfer: T,
                        amount: Amount::new(45).unwrap(),
                        to: BOB,
                    },
                ),
                at(3, AccountEvent::TransferSettled { transfer: T }),
            ])
            .then_state(Some(view(-15, 3, false)));
    }

    #[test]
    fn an_event_seen_before_changes_nothing() {
        view_spec(AccountSummary)
            .given([opened(), deposited(1, 30), deposited(1, 30)])
            .then_state(Some(view(30, 1, false)));
        let seen = view(30, 1, false);
        assert_eq!(apply(Some(&seen), &deposited(1, 30)), None);
    }

    #[test]
    fn no_view_before_the_opening() {
        view_spec(AccountSummary)
            .given([deposited(1, 30)])
            .then_state(None);
    }

    #[test]
    fn a_closing_closes_the_view_and_moves_no_money() {
        view_spec(AccountSummary)
            .given([opened(), at(1, AccountEvent::Closed)])
            .then_state(Some(view(0, 1, true)));
        let (_, entry) = apply(Some(&view(0, 0, false)), &at(1, AccountEvent::Closed)).unwrap();
        assert_eq!(entry, None);
    }

    #[test]
    fn money_moved_makes_a_ledger_line_with_the_balance_after() {
        let (next, entry) = apply(Some(&view(30, 1, false)), &deposited(2, 12)).unwrap();
        assert_eq!(next, view(42, 2, false));
        assert_eq!(
            entry,
            Some(LedgerEntry {
                revision: 2,
                kind: MovementKind::Deposit,
                amount: 12,
                balance: 42,
                transfer: None,
                counterparty: None,
                recorded_at_ms: 1_002,
            })
        );
        let credited = at(
            2,
            AccountEvent::TransferCredited {
                transfer: T,
                amount: Amount::new(5).unwrap(),
                from: BOB,
            },
        );
        let (_, entry) = apply(Some(&view(30, 1, false)), &credited).unwrap();
        let entry = entry.unwrap();
        assert_eq!(
            (entry.kind, entry.amount, entry.transfer, entry.counterparty),
            (MovementKind::TransferIn, 5, Some(T), Some(BOB))
        );
    }

    #[test]
    fn the_view_shows_its_position_as_a_write_answers_it() {
        let json = serde_json::to_value(view(1, 3, false)).unwrap();
        assert_eq!(json["position"], "13/13");
        assert_eq!(json["balance"], 1);
    }
}

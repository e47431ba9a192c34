//! The account: open, deposit, withdraw, take part in transfers, close.
//!
//! A pure [`Decider`]: events, state, `evolve`, and one small decide function per command;
//! nothing here touches a store. The balance may go below zero only down to the overdraft
//! limit chosen at opening; a closed account is terminal; money a transfer took out stays
//! "in flight" until the transfer settles or refunds it, and an account cannot close while any is.

use std::collections::BTreeMap;
use std::fmt;

use decider_core::{Category, Decider, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, Currency};
use crate::transfer::TransferId;

/// The longest owner name an account takes.
pub const MAX_OWNER_CHARS: usize = 200;

/// The category of account streams.
pub const ACCOUNTS: Category = Category::new("account");

/// An account's identity; its events live in the stream `account-<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub Uuid);

impl AccountId {
    /// The stream that holds this account's events.
    pub fn stream(self) -> StreamId {
        ACCOUNTS.stream(self.0)
    }

    /// The account whose stream is `stream`, if it is an account stream.
    pub fn from_stream(stream: &StreamId) -> Option<Self> {
        let id = ACCOUNTS.key_of(stream)?;
        Uuid::parse_str(id).ok().map(Self)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What can happen to an account. Amounts are positive minor units of the account's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened; always its first event.
    Opened {
        /// Who holds it.
        owner: String,
        /// The only currency it holds.
        currency: Currency,
        /// How far below zero its balance may go; `None` for not at all.
        overdraft_limit: Option<Amount>,
    },
    /// Cash paid in by the holder.
    Deposited {
        /// Added to the balance.
        amount: Amount,
    },
    /// Cash paid out to the holder.
    Withdrawn {
        /// Taken from the balance.
        amount: Amount,
    },
    /// A transfer took money out; it is in flight until settled or refunded.
    TransferDebited {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
        /// Taken from the balance and held in flight.
        amount: Amount,
        /// The account it is going to.
        to: AccountId,
    },
    /// A transfer paid money in.
    TransferCredited {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
        /// Added to the balance.
        amount: Amount,
        /// The account it came from.
        from: AccountId,
    },
    /// A transfer that could not be completed gave back what it had taken out.
    TransferRefunded {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
        /// What it had in flight, back in the balance.
        amount: Amount,
    },
    /// A transfer this account paid for reached its destination: nothing is in flight for it.
    TransferSettled {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
    },
    /// The account was closed; it takes no more commands.
    Closed,
}

/// What an account can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open the account.
    Open {
        /// Who holds it; not blank, at most [`MAX_OWNER_CHARS`] characters.
        owner: String,
        /// The only currency it will hold.
        currency: Currency,
        /// How far below zero its balance may go; `None` for not at all.
        overdraft_limit: Option<Amount>,
    },
    /// Pay cash in.
    Deposit {
        /// What to add to the balance.
        amount: Amount,
    },
    /// Pay cash out, within the balance and the overdraft limit.
    Withdraw {
        /// What to take from the balance.
        amount: Amount,
    },
    /// Take money out for a transfer (the transfer's first step), once per transfer.
    DebitTransfer {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
        /// What to take, within the balance and the overdraft limit.
        amount: Amount,
        /// The transfer's currency, which must be the account's.
        currency: Currency,
        /// Where it is going.
        to: AccountId,
    },
    /// Pay in the money of a transfer (its second step).
    CreditTransfer {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
        /// What to add to the balance.
        amount: Amount,
        /// The transfer's currency, which must be the account's.
        currency: Currency,
        /// Where it comes from.
        from: AccountId,
    },
    /// Give back what `transfer` took out (its compensation).
    RefundTransfer {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
    },
    /// Mark what `transfer` took out as delivered.
    SettleTransfer {
        /// The transfer, whose id keys its money in flight.
        transfer: TransferId,
    },
    /// Close the account; only at a zero balance and with no transfer in flight.
    Close,
}

/// Why an account refused a command.
///
/// Transfers record the refusals of their steps in their events
/// ([`Refusal`](crate::transfer::Refusal)), so this enum's serde form is part of the log: add
/// variants, do not rename them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AccountError {
    /// The account has not been opened.
    #[error("the account does not exist")]
    NotOpen,
    /// Opening an account that is already open (or was, and is closed).
    #[error("the account is already open")]
    AlreadyOpen,
    /// The account is closed and takes no more commands.
    #[error("the account is closed")]
    Closed,
    /// A blank owner, one longer than [`MAX_OWNER_CHARS`], or one holding a control character
    /// (U+0000 among them, which no store can keep as text).
    #[error(
        "the owner must be 1 to {MAX_OWNER_CHARS} characters, not blank, without control characters"
    )]
    InvalidOwner,
    /// Paying out more than the balance and overdraft allow.
    #[error(
        "insufficient funds: balance {balance}, overdraft limit {overdraft_limit}, requested {requested}"
    )]
    InsufficientFunds {
        /// The balance, in minor units.
        balance: i64,
        /// How far below zero it may go.
        overdraft_limit: i64,
        /// What was asked for.
        requested: Amount,
    },
    /// The balance would not fit in 64 bits.
    #[error("the balance would overflow")]
    BalanceOverflow,
    /// A transfer in another currency than the account's.
    #[error("currency mismatch: the account holds {account}, the transfer is in {transfer}")]
    CurrencyMismatch {
        /// The account's currency.
        account: Currency,
        /// The transfer's.
        transfer: Currency,
    },
    /// Refunding or settling a transfer that has no money in flight here.
    #[error("transfer {0} has no money in flight on this account")]
    NoTransferInFlight(TransferId),
    /// Debiting for the same transfer twice.
    #[error("transfer {0} already took money out of this account")]
    TransferAlreadyDebited(TransferId),
    /// Closing with money in the account (or owed): the balance, in minor units.
    #[error("the balance is {0}; an account closes only at zero")]
    NonZeroBalance(i64),
    /// Closing while transfers' money is in flight: how many transfers.
    #[error("{0} transfer(s) in flight; the account closes when they settle")]
    TransfersInFlight(usize),
}

/// An open account, as its events tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAccount {
    /// Its currency.
    pub currency: Currency,
    /// Its balance in minor units; below zero only within the overdraft limit.
    pub balance: i64,
    /// How far below zero the balance may go, in minor units (0 for not at all).
    pub overdraft_limit: i64,
    /// Money out for transfers that have not settled yet.
    pub in_flight: BTreeMap<TransferId, Amount>,
}

/// An account's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccountState {
    /// Never opened.
    #[default]
    Unopened,
    /// Open.
    Open(OpenAccount),
    /// Closed, for good.
    Closed,
}

/// The account decider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Account;

impl Decider for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type State = AccountState;
    type Error = AccountError;

    fn initial_state(&self) -> AccountState {
        AccountState::Unopened
    }

    fn decide(
        &self,
        command: &AccountCommand,
        state: &AccountState,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand as C;
        match *command {
            C::Open {
                ref owner,
                currency,
                overdraft_limit,
            } => open(state, owner, currency, overdraft_limit),
            C::Deposit { amount } => deposit(state.open()?, amount),
            C::Withdraw { amount } => withdraw(state.open()?, amount),
            C::DebitTransfer {
                transfer,
                amount,
                currency,
                to,
            } => debit_transfer(state.open()?, transfer, amount, currency, to),
            C::CreditTransfer {
                transfer,
                amount,
                currency,
                from,
            } => credit_transfer(state.open()?, transfer, amount, currency, from),
            C::RefundTransfer { transfer } => refund_transfer(state.open()?, transfer),
            C::SettleTransfer { transfer } => settle_transfer(state.open()?, transfer),
            C::Close => close(state.open()?),
        }
    }

    fn evolve(&self, state: AccountState, event: &AccountEvent) -> AccountState {
        match (state, event) {
            (
                AccountState::Unopened,
                AccountEvent::Opened {
                    currency,
                    overdraft_limit,
                    ..
                },
            ) => AccountState::Open(OpenAccount {
                currency: *currency,
                balance: 0,
                overdraft_limit: overdraft_limit.map_or(0, Amount::minor_units),
                in_flight: BTreeMap::new(),
            }),
            (AccountState::Open(_), AccountEvent::Closed) => AccountState::Closed,
            (AccountState::Open(account), event) => AccountState::Open(account.evolve(event)),
            // Events `decide` never produces in these states: the history stands as it is.
            (state, _) => state,
        }
    }

    fn is_terminal(&self, state: &AccountState) -> bool {
        matches!(state, AccountState::Closed)
    }
}

fn open(
    state: &AccountState,
    owner: &str,
    currency: Currency,
    overdraft_limit: Option<Amount>,
) -> Result<Vec<AccountEvent>, AccountError> {
    if !matches!(state, AccountState::Unopened) {
        return Err(AccountError::AlreadyOpen);
    }
    if owner.trim().is_empty()
        || owner.chars().count() > MAX_OWNER_CHARS
        || owner.chars().any(char::is_control)
    {
        return Err(AccountError::InvalidOwner);
    }
    Ok(vec![AccountEvent::Opened {
        owner: owner.to_owned(),
        currency,
        overdraft_limit,
    }])
}

fn deposit(account: &OpenAccount, amount: Amount) -> Result<Vec<AccountEvent>, AccountError> {
    account.credited(amount)?;
    Ok(vec![AccountEvent::Deposited { amount }])
}

fn withdraw(account: &OpenAccount, amount: Amount) -> Result<Vec<AccountEvent>, AccountError> {
    account.debited(amount)?;
    Ok(vec![AccountEvent::Withdrawn { amount }])
}

fn debit_transfer(
    account: &OpenAccount,
    transfer: TransferId,
    amount: Amount,
    currency: Currency,
    to: AccountId,
) -> Result<Vec<AccountEvent>, AccountError> {
    account.check_currency(currency)?;
    if account.in_flight.contains_key(&transfer) {
        return Err(AccountError::TransferAlreadyDebited(transfer));
    }
    account.debited(amount)?;
    Ok(vec![AccountEvent::TransferDebited {
        transfer,
        amount,
        to,
    }])
}

fn credit_transfer(
    account: &OpenAccount,
    transfer: TransferId,
    amount: Amount,
    currency: Currency,
    from: AccountId,
) -> Result<Vec<AccountEvent>, AccountError> {
    account.check_currency(currency)?;
    account.credited(amount)?;
    Ok(vec![AccountEvent::TransferCredited {
        transfer,
        amount,
        from,
    }])
}

fn refund_transfer(
    account: &OpenAccount,
    transfer: TransferId,
) -> Result<Vec<AccountEvent>, AccountError> {
    let amount = account.in_flight_amount(transfer)?;
    account.credited(amount)?;
    Ok(vec![AccountEvent::TransferRefunded { transfer, amount }])
}

fn settle_transfer(
    account: &OpenAccount,
    transfer: TransferId,
) -> Result<Vec<AccountEvent>, AccountError> {
    account.in_flight_amount(transfer)?;
    Ok(vec![AccountEvent::TransferSettled { transfer }])
}

fn close(account: &OpenAccount) -> Result<Vec<AccountEvent>, AccountError> {
    if account.balance != 0 {
        return Err(AccountError::NonZeroBalance(account.balance));
    }
    if !account.in_flight.is_empty() {
        return Err(AccountError::TransfersInFlight(account.in_flight.len()));
    }
    Ok(vec![AccountEvent::Closed])
}

impl AccountState {
    /// The open account, or why there is none.
    fn open(&self) -> Result<&OpenAccount, AccountError> {
        match self {
            Self::Unopened => Err(AccountError::NotOpen),
            Self::Open(account) => Ok(account),
            Self::Closed => Err(AccountError::Closed),
        }
    }
}

impl OpenAccount {
    fn evolve(mut self, event: &AccountEvent) -> Self {
        use AccountEvent as E;
        // `decide` checked every sum before the event was written; saturating keeps `evolve`
        // total for histories it did not write.
        match *event {
            E::Deposited { amount } | E::TransferCredited { amount, .. } => {
                self.balance = self.balance.saturating_add(amount.minor_units());
            }
            E::TransferRefunded { transfer, amount } => {
                self.balance = self.balance.saturating_add(amount.minor_units());
                self.in_flight.remove(&transfer);
            }
            E::Withdrawn { amount } => {
                self.balance = self.balance.saturating_sub(amount.minor_units());
            }
            E::TransferDebited {
                transfer, amount, ..
            } => {
                self.balance = self.balance.saturating_sub(amount.minor_units());
                self.in_flight.insert(transfer, amount);
            }
            E::TransferSettled { transfer } => {
                self.in_flight.remove(&transfer);
            }
            E::Opened { .. } | E::Closed => {}
        }
        self
    }

    fn credited(&self, amount: Amount) -> Result<i64, AccountError> {
        self.balance
            .checked_add(amount.minor_units())
            .ok_or(AccountError::BalanceOverflow)
    }

    fn debited(&self, amount: Amount) -> Result<i64, AccountError> {
        let insufficient = || AccountError::InsufficientFunds {
            balance: self.balance,
            overdraft_limit: self.overdraft_limit,
            requested: amount,
        };
        let balance = self
            .balance
            .checked_sub(amount.minor_units())
            .ok_or_else(insufficient)?;
        if balance < -self.overdraft_limit {
            return Err(insufficient());
        }
        Ok(balance)
    }

    fn check_currency(&self, currency: Currency) -> Result<(), AccountError> {
        if currency == self.currency {
            Ok(())
        } else {
            Err(AccountError::CurrencyMismatch {
                account: self.currency,
                transfer: currency,
            })
        }
    }

    fn in_flight_amount(&self, transfer: TransferId) -> Result<Amount, AccountError> {
        self.in_flight
            .get(&transfer)
            .copied()
            .ok_or(AccountError::NoTransferInFlight(transfer))
    }
}

#[cfg(test)]
mod specs {
    #![allow(clippy::unwrap_used)]

    use decider_core::testing::spec;

    use super::*;

    fn amount(units: u64) -> Amount {
        Amount::new(units).unwrap()
    }

    fn eur() -> Currency {
        "EUR".parse().unwrap()
    }

    fn opened(limit: Option<u64>) -> AccountEvent {
        AccountEvent::Opened {
            owner: "Ada".into(),
            currency: eur(),
            overdraft_limit: limit.map(amount),
        }
    }

    fn deposited(units: u64) -> AccountEvent {
        AccountEvent::Deposited {
            amount: amount(units),
        }
    }

    const T1: TransferId = TransferId(Uuid::from_u128(1));
    const OTHER: AccountId = AccountId(Uuid::from_u128(2));

    #[test]
    fn opens_once() {
        spec(Account)
            .when(AccountCommand::Open {
                owner: "Ada".into(),
                currency: eur(),
                overdraft_limit: None,
            })
            .then([opened(None)]);
        spec(Account)
            .given([opened(None)])
            .when(AccountCommand::Open {
                owner: "Ada".into(),
                currency: eur(),
                overdraft_limit: None,
            })
            .then_error(AccountError::AlreadyOpen);
    }

    #[test]
    fn refuses_a_blank_overlong_or_control_character_owner() {
        spec(Account)
            .when(AccountCommand::Open {
                owner: "  ".into(),
                currency: eur(),
                overdraft_limit: None,
            })
            .then_error(AccountError::InvalidOwner);
        spec(Account)
            .when(AccountCommand::Open {
                owner: "x".repeat(MAX_OWNER_CHARS + 1),
                currency: eur(),
                overdraft_limit: None,
            })
            .then_error(AccountError::InvalidOwner);
        for owner in ["Ada\0", "Ada\nLovelace", "\u{1b}[31mAda"] {
            spec(Account)
                .when(AccountCommand::Open {
                    owner: owner.into(),
                    currency: eur(),
                    overdraft_limit: None,
                })
                .then_error(AccountError::InvalidOwner);
        }
    }

    #[test]
    fn takes_nothing_before_it_is_opened() {
        spec(Account)
            .when(AccountCommand::Deposit { amount: amount(5) })
            .then_error(AccountError::NotOpen);
        spec(Account)
            .when(AccountCommand::Close)
            .then_error(AccountError::NotOpen);
    }

    #[test]
    fn deposits_and_withdraws_within_the_balance() {
        spec(Account)
            .given([opened(None)])
            .when(AccountCommand::Deposit {
                amount: amount(100),
            })
            .then([deposited(100)]);
        spec(Account)
            .given([opened(None), deposited(100)])
            .when(AccountCommand::Withdraw {
                amount: amount(100),
            })
            .then([AccountEvent::Withdrawn {
                amount: amount(100),
            }]);
        spec(Account)
            .given([opened(None), deposited(100)])
            .when(AccountCommand::Withdraw {
                amount: amount(101),
            })
            .then_error(AccountError::InsufficientFunds {
                balance: 100,
                overdraft_limit: 0,
                requested: amount(101),
            });
    }

    #[test]
    fn goes_below_zero_only_down_to_the_overdraft_limit() {
        spec(Account)
            .given([opened(Some(50)), deposited(10)])
            .when(AccountCommand::Withdraw { amount: amount(60) })
            .then([AccountEvent::Withdrawn { amount: amount(60) }]);
        spec(Account)
            .given([opened(Some(50)), deposited(10)])
            .when(AccountCommand::Withdraw { amount: amount(61) })
            .then_error_matches(|e| matches!(e, AccountError::InsufficientFunds { .. }));
    }

    #[test]
    fn a_balance_never_overflows() {
        let max = amount(i64::MAX as u64);
        spec(Account)
            .given([opened(None), AccountEvent::Deposited { amount: max }])
            .when(AccountCommand::Deposit { amount: amount(1) })
            .then_error(AccountError::BalanceOverflow);
        // The largest overdraft and the largest withdrawal: i64::MIN is not reached by wrapping.
        spec(Account)
            .given([opened(Some(i64::MAX as u64))])
            .when(AccountCommand::Withdraw { amount: max })
            .then([AccountEvent::Withdrawn { amount: max }]);
        spec(Account)
            .given([
                opened(Some(i64::MAX as u64)),
                AccountEvent::Withdrawn { amount: max },
            ])
            .when(AccountCommand::Withdraw { amount: amount(2) })
            .then_error_matches(|e| matches!(e, AccountError::InsufficientFunds { .. }));
    }

    #[test]
    fn closes_only_at_zero_with_nothing_in_flight() {
        spec(Account)
            .given([opened(None), deposited(5)])
            .when(AccountCommand::Close)
            .then_error(AccountError::NonZeroBalance(5));
        spec(Account)
            .given([opened(None)])
            .when(AccountCommand::Close)
            .then([AccountEvent::Closed]);
        spec(Account)
            .given([
                opened(None),
                deposited(5),
                AccountEvent::TransferDebited {
                    transfer: T1,
                    amount: amount(5),
                    to: OTHER,
                },
            ])
            .when(AccountCommand::Close)
            .then_error(AccountError::TransfersInFlight(1));
    }

    #[test]
    fn a_closed_account_refuses_everything() {
        spec(Account)
            .given([opened(None), AccountEvent::Closed])
            .when(AccountCommand::Deposit { amount: amount(5) })
            .then_error(AccountError::Closed);
        spec(Account)
            .given([opened(None), AccountEvent::Closed])
            .when(AccountCommand::Open {
                owner: "Ada".into(),
                currency: eur(),
                overdraft_limit: None,
            })
            .then_error(AccountError::AlreadyOpen);
    }

    #[test]
    fn a_closed_account_is_terminal() {
        let closed = fold_state([opened(None), AccountEvent::Closed]);
        assert!(Account.is_terminal(&closed));
        assert!(!Account.is_terminal(&fold_state([opened(None)])));
    }

    #[test]
    fn a_transfer_debit_checks_currency_funds_and_repeats() {
        let debit = |units, currency: &str| AccountCommand::DebitTransfer {
            transfer: T1,
            amount: amount(units),
            currency: currency.parse().unwrap(),
            to: OTHER,
        };
        spec(Account)
            .given([opened(None), deposited(10)])
            .when(debit(10, "EUR"))
            .then([AccountEvent::TransferDebited {
                transfer: T1,
                amount: amount(10),
                to: OTHER,
            }]);
        spec(Account)
            .given([opened(None), deposited(10)])
            .when(debit(10, "USD"))
            .then_error(AccountError::CurrencyMismatch {
                account: eur(),
                transfer: "USD".parse().unwrap(),
            });
        spec(Account)
            .given([opened(None), deposited(10)])
            .when(debit(11, "EUR"))
            .then_error_matches(|e| matches!(e, AccountError::InsufficientFunds { .. }));
        spec(Account)
            .given([
                opened(None),
                deposited(20),
                AccountEvent::TransferDebited {
                    transfer: T1,
                    amount: amount(10),
                    to: OTHER,
                },
            ])
            .when(debit(10, "EUR"))
            .then_error(AccountError::TransferAlreadyDebited(T1));
    }

    #[test]
    fn a_transfer_credit_checks_currency() {
        let credit = |currency: &str| AccountCommand::CreditTransfer {
            transfer: T1,
            amount: amount(7),
            currency: currency.parse().unwrap(),
            from: OTHER,
        };
        spec(Account)
            .given([opened(None)])
            .when(credit("EUR"))
            .then([AccountEvent::TransferCredited {
                transfer: T1,
                amount: amount(7),
                from: OTHER,
            }]);
        spec(Account)
            .given([opened(None)])
            .when(credit("GBP"))
            .then_error_matches(|e| matches!(e, AccountError::CurrencyMismatch { .. }));
        spec(Account)
            .when(credit("EUR"))
            .then_error(AccountError::NotOpen);
    }

    #[test]
    fn refunds_and_settles_only_money_in_flight() {
        let debited = AccountEvent::TransferDebited {
            transfer: T1,
            amount: amount(10),
            to: OTHER,
        };
        spec(Account)
            .given([opened(None), deposited(10), debited.clone()])
            .when(AccountCommand::RefundTransfer { transfer: T1 })
            .then([AccountEvent::TransferRefunded {
                transfer: T1,
                amount: amount(10),
            }]);
        spec(Account)
            .given([opened(None), deposited(10), debited.clone()])
            .when(AccountCommand::SettleTransfer { transfer: T1 })
            .then([AccountEvent::TransferSettled { transfer: T1 }]);
        spec(Account)
            .given([
                opened(None),
                deposited(10),
                debited,
                AccountEvent::TransferSettled { transfer: T1 },
            ])
            .when(AccountCommand::RefundTransfer { transfer: T1 })
            .then_error(AccountError::NoTransferInFlight(T1));
        spec(Account)
            .given([opened(None)])
            .when(AccountCommand::SettleTransfer { transfer: T1 })
            .then_error(AccountError::NoTransferInFlight(T1));
    }

    #[test]
    fn a_refund_restores_the_balance_and_lets_the_account_close() {
        let state = fold_state([
            opened(None),
            deposited(10),
            AccountEvent::TransferDebited {
                transfer: T1,
                amount: amount(10),
                to: OTHER,
            },
            AccountEvent::TransferRefunded {
                transfer: T1,
                amount: amount(10),
            },
            AccountEvent::Withdrawn { amount: amount(10) },
        ]);
        let AccountState::Open(account) = &state else {
            panic!("not open: {state:?}");
        };
        assert_eq!((account.balance, account.in_flight.len()), (0, 0));
        assert_eq!(
            Account.decide(&AccountCommand::Close, &state),
            Ok(vec![AccountEvent::Closed])
        );
    }

    fn fold_state(events: impl IntoIterator<Item = AccountEvent>) -> AccountState {
        let events: Vec<_> = events.into_iter().collect();
        decider_core::fold(&Account, &events)
    }
}

#[cfg(test)]
mod properties {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn command() -> impl Strategy<Value = AccountCommand> {
        let amount = prop_oneof![1..1_000_i64, Just(i64::MAX), Just(i64::MAX / 2 + 1)]
            .prop_map(|units| Amount::try_from(units).unwrap());
        let transfer = (0..3_u128).prop_map(|n| TransferId(Uuid::from_u128(n)));
        let currency = prop_oneof![Just("EUR"), Just("USD")].prop_map(|c| c.parse().unwrap());
        let other = AccountId(Uuid::from_u128(99));
        prop_oneof![
            amount
                .clone()
                .prop_map(|amount| AccountCommand::Deposit { amount }),
            amount
                .clone()
                .prop_map(|amount| AccountCommand::Withdraw { amount }),
            (transfer.clone(), amount.clone(), currency.clone()).prop_map(
                move |(transfer, amount, currency)| AccountCommand::DebitTransfer {
                    transfer,
                    amount,
                    currency,
                    to: other,
                }
            ),
            (transfer.clone(), amount, currency).prop_map(move |(transfer, amount, currency)| {
                AccountCommand::CreditTransfer {
                    transfer,
                    amount,
                    currency,
                    from: other,
                }
            }),
            transfer
                .clone()
                .prop_map(|transfer| AccountCommand::RefundTransfer { transfer }),
            transfer.prop_map(|transfer| AccountCommand::SettleTransfer { transfer }),
            Just(AccountCommand::Close),
        ]
    }

    proptest! {
        /// Whatever is asked, in whatever order: the balance stays within the overdraft limit,
        /// equals the sum of the movements, never wraps, and an account closes only when empty.
        #[test]
        fn no_command_sequence_breaks_the_account_rules(
            limit in prop_oneof![Just(None), (1..500_i64).prop_map(Some), Just(Some(i64::MAX))],
            commands in proptest::collection::vec(command(), 0..60),
        ) {
            let open = AccountCommand::Open {
                owner: "Ada".into(),
                currency: "EUR".parse().unwrap(),
                overdraft_limit: limit.map(|l| Amount::try_from(l).unwrap()),
            };
            let mut state = Account.evolve(
                AccountState::Unopened,
                &Account.decide(&open, &AccountState::Unopened).unwrap()[0],
            );
            let mut moved: i128 = 0;
            for command in &commands {
                if Account.is_terminal(&state) {
                    break;
                }
                let Ok(events) = Account.decide(command, &state) else { continue };
                prop_assert_eq!(Account.decide(command, &state), Ok(events.clone()), "decide is pure");
                for event in &events {
                    moved += match event {
                        AccountEvent::Deposited { amount }
                        | AccountEvent::TransferCredited { amount, .. }
                        | AccountEvent::TransferRefunded { amount, .. } => i128::from(amount.minor_units()),
                        AccountEvent::Withdrawn { amount }
                        | AccountEvent::TransferDebited { amount, .. } => -i128::from(amount.minor_units()),
                        _ => 0,
                    };
                    if matches!(event, AccountEvent::Closed) {
                        prop_assert_eq!(moved, 0, "closed with money in it");
                    }
                    state = Account.evolve(state, event);
                }
                if let AccountState::Open(account) = &state {
                    prop_assert_eq!(i128::from(account.balance), moved);
                    prop_assert!(account.balance >= -limit.unwrap_or(0));
                    let in_flight: i128 = account.in_flight.values().map(|a| i128::from(a.minor_units())).sum();
                    prop_assert!(in_flight >= 0);
                }
            }
        }
    }
}

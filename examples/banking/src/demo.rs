//! A scripted day at the bank: accounts opened, money moved, transfers that fail in each way a
//! transfer can, a retried request, and the balances and ledger at the end.

use std::io::Write;
use std::time::Duration;

use decider_core::EventStore;

use crate::account::AccountCommand;
use crate::bank::{Bank, BankError, Request};
use crate::money::{Amount, Currency};
use crate::read_model::ReadModels;
use crate::transfer::{TransferId, TransferRequest, TransferState};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The bank refused or failed where the script did not expect it.
    #[error(transparent)]
    Bank(#[from] BankError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// The script's own figures are wrong.
    #[error("bad figure in the script: {0}")]
    Script(String),
}

const WAIT: Duration = Duration::from_secs(10);

/// Runs the scenario on `bank`, reporting to `out`.
pub async fn run<S: EventStore + Clone, R: ReadModels>(
    bank: &Bank<S, R>,
    out: &mut impl Write,
) -> Result<(), DemoError> {
    // Keys are unique per run, so the demo can run again on a store that keeps its data.
    let run = uuid::Uuid::new_v4();
    let key = |name: &str| Request {
        idempotency_key: Some(format!("demo-{run}-{name}")),
        ..Request::default()
    };
    let eur = currency("EUR")?;
    let usd = currency("USD")?;

    writeln!(out, "Opening accounts")?;
    let mut open = async |name: &str, currency, overdraft: Option<i64>| {
        let limit = overdraft.map(amount).transpose()?;
        let (id, _) = bank
            .open_account(&key(name), name.to_owned(), currency, limit)
            .await?;
        writeln!(out, "  {name:<6} {currency} {id}")?;
        Ok::<_, DemoError>(id)
    };
    let ada = open("Ada", eur, Some(5_000)).await?;
    let bob = open("Bob", eur, None).await?;
    let carol = open("Carol", usd, None).await?;
    let dave = open("Dave", eur, None).await?;

    writeln!(out, "Deposits, a withdrawal, and Dave closes his account")?;
    for (name, id, units) in [
        ("Ada", ada, 100_00),
        ("Bob", bob, 20_00),
        ("Carol", carol, 50_00),
    ] {
        let amount = amount(units)?;
        let command = AccountCommand::Deposit { amount };
        bank.account_command(&key(&format!("deposit-{name}")), id, command)
            .await?;
    }
    let command = AccountCommand::Withdraw {
        amount: amount(15_00)?,
    };
    bank.account_command(&key("withdraw-Ada"), ada, command)
        .await?;
    bank.account_command(&key("close-Dave"), dave, AccountCommand::Close)
        .await?;

    writeln!(out, "Transfers")?;
    let transfers = [
        ("Ada → Bob 30.00 EUR", ada, bob, 30_00, eur),
        (
            "Bob → Carol 10.00 EUR (Carol holds USD)",
            bob,
            carol,
            10_00,
            eur,
        ),
        ("Ada → Dave 5.00 EUR (Dave closed)", ada, dave, 5_00, eur),
        (
            "Bob → Ada 1,000.00 EUR (more than Bob has)",
            bob,
            ada,
            1_000_00,
            eur,
        ),
    ];
    let mut requested = Vec::new();
    for (n, (label, from, to, units, currency)) in transfers.into_iter().enumerate() {
        let request = TransferRequest {
            from,
            to,
            amount: amount(units)?,
            currency,
        };
        let (id, _) = bank
            .request_transfer(&key(&format!("transfer-{n}")), request)
            .await?;
        requested.push((label, id, request));
    }
    // The first transfer sent again with its key: the same transfer, not a second one.
    let (label, first, request) = requested[0];
    let (again, receipt) = bank.request_transfer(&key("transfer-0"), request).await?;
    for (label, id, _) in &requested {
        writeln!(out, "  {label:<42} {}", describe(bank, *id).await?)?;
    }
    writeln!(
        out,
        "  {label} sent again with its idempotency key: same transfer: {}, replayed: {}",
        again == first,
        receipt.replayed
    )?;

    writeln!(out, "Balances (read model)")?;
    for (name, id) in [("Ada", ada), ("Bob", bob), ("Carol", carol), ("Dave", dave)] {
        let view = bank.account_now(id, WAIT).await?;
        let closed = if view.closed { " (closed)" } else { "" };
        writeln!(
            out,
            "  {name:<6} {:>10} {}{closed}",
            money(view.balance),
            view.currency
        )?;
    }
    writeln!(out, "Ada's ledger")?;
    for entry in bank.statement(ada, None).await?.1.entries {
        writeln!(
            out,
            "  #{:<2} {:<16} {:>10} → {:>10}",
            entry.revision,
            entry.kind.as_str(),
            money(entry.amount),
            money(entry.balance)
        )?;
    }
    Ok(())
}

async fn describe<S: EventStore + Clone, R: ReadModels>(
    bank: &Bank<S, R>,
    id: TransferId,
) -> Result<String, DemoError> {
    let (state, _) = bank.transfer(id, Some(WAIT)).await?;
    Ok(match state {
        TransferState::Completed(_) => "completed".to_owned(),
        TransferState::Failed {
            reason,
            compensated: true,
            ..
        } => format!("failed, source refunded: {reason}"),
        TransferState::Failed { reason, .. } => format!("failed, nothing moved: {reason}"),
        other => format!("still in progress: {}", other.status()),
    })
}

/// Minor units as `1234.56`.
fn money(minor_units: i64) -> String {
    let sign = if minor_units < 0 { "-" } else { "" };
    let units = minor_units.unsigned_abs();
    format!("{sign}{}.{:02}", units / 100, units % 100)
}

fn amount(units: i64) -> Result<Amount, DemoError> {
    Amount::try_from(units).map_err(|error| DemoError::Script(error.to_string()))
}

fn currency(code: &str) -> Result<Currency, DemoError> {
    code.parse()
        .map_err(|error: crate::money::InvalidCurrency| DemoError::Script(error.to_string()))
}

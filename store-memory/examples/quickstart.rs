//! A bank account in twenty lines of domain, run on the in-memory store.
//!
//! `cargo run --example quickstart`
#![allow(clippy::print_stdout)]

use decider_core::{
    CommandError, CommandHandler, Decider, EventFilter, EventStore, Metadata, StreamId,
};
use decider_store_memory::MemoryStore;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

// --- the domain: events, commands, state, rules -------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

enum Command {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance} cents, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

/// `None` until opened, then the balance in cents.
struct Account;

impl Decider for Account {
    type Command = Command;
    type Event = Event;
    type State = Option<u64>;
    type Error = Refusal;

    fn initial_state(&self) -> Option<u64> {
        None
    }

    fn decide(&self, command: &Command, state: &Option<u64>) -> Result<Vec<Event>, Refusal> {
        match (command, *state) {
            (Command::Open { owner }, None) => Ok(vec![Event::Opened {
                owner: owner.clone(),
            }]),
            (Command::Open { .. }, Some(_)) => Err(Refusal::AlreadyOpen),
            (_, None) => Err(Refusal::NotOpen),
            (Command::Deposit { amount }, Some(_)) => {
                Ok(vec![Event::Deposited { amount: *amount }])
            }
            (Command::Withdraw { amount }, Some(balance)) if *amount > balance => {
                Err(Refusal::InsufficientFunds {
                    balance,
                    asked: *amount,
                })
            }
            (Command::Withdraw { amount }, Some(_)) => {
                Ok(vec![Event::Withdrawn { amount: *amount }])
            }
        }
    }

    fn evolve(&self, state: Option<u64>, event: &Event) -> Option<u64> {
        match event {
            Event::Opened { .. } => Some(0),
            Event::Deposited { amount } => state.map(|balance| balance + amount),
            Event::Withdrawn { amount } => state.map(|balance| balance - amount),
        }
    }
}

// --- the application: a handler over a store ----------------------------------------------

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone());
    let ada = StreamId::new("account-ada")?;

    accounts
        .handle(
            &ada,
            Command::Open {
                owner: "Ada".into(),
            },
        )
        .await?;
    accounts
        .handle(&ada, Command::Deposit { amount: 10_000 })
        .await?;

    // A client retrying the same request (same idempotency key) moves money once.
    let request = Metadata::default().with_idempotency_key("withdraw-req-1");
    for _ in 0..3 {
        let outcome = accounts
            .handle_with(&ada, Command::Withdraw { amount: 3_000 }, request.clone())
            .await?;
        println!("withdraw 30.00: replayed={}", outcome.replayed);
    }

    match accounts
        .handle(&ada, Command::Withdraw { amount: 50_000 })
        .await
    {
        Err(CommandError::Rejected(refusal)) => println!("withdraw 500.00 refused: {refusal}"),
        other => println!("unexpected: {other:?}"),
    }

    let balance = accounts.load(&ada).await?.state.unwrap_or_default();
    println!("balance of {ada}: {}.{:02}", balance / 100, balance % 100);

    println!("the log, the system of record:");
    let events: Vec<_> = store.read_whole_stream(&ada).try_collect().await?;
    for event in events {
        let payload = String::from_utf8_lossy(&event.payload);
        println!(
            "  {} #{} {} {payload}",
            event.stream, event.revision, event.event_type
        );
    }
    let all = store
        .read_whole_log(&EventFilter::all())
        .try_collect::<Vec<_>>()
        .await?;
    println!("{} events in the store", all.len());
    Ok(())
}

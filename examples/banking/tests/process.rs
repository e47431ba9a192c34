//! The transfer process under failure, and the demo on each store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::inconsistent_digit_grouping
)]

mod support;

use std::time::Duration;

use banking::account::{AccountCommand, AccountId};
use banking::bank::{self, Request};
use banking::demo;
use banking::money::Amount;
use banking::read_model::{MovementKind, ReadModels};
use banking::transfer::{TransferRequest, TransferState};
use decider_store_memory::MemoryStore;

const WAIT: Duration = Duration::from_secs(10);

/// Each append the process makes commits and then loses its reply, in turn, so that every
/// step is retried after it took effect: the money still moves exactly once.
#[tokio::test]
async fn lost_replies_between_the_steps_of_a_transfer_move_money_once() {
    for lost in 1..=6 {
        let store = MemoryStore::new();
        let running = bank::in_memory_on(store.clone());
        let bank = running.bank().clone();
        let eur = "EUR".parse().unwrap();
        let no_key = Request::default();
        let (ada, _) = bank
            .open_account(&no_key, "Ada".into(), eur, None)
            .await
            .unwrap();
        let (bob, _) = bank
            .open_account(&no_key, "Bob".into(), eur, None)
            .await
            .unwrap();
        let deposit = AccountCommand::Deposit {
            amount: Amount::new(100).unwrap(),
        };
        bank.account_command(&Request::default(), ada, deposit)
            .await
            .unwrap();
        let request = TransferRequest {
            from: ada,
            to: bob,
            amount: Amount::new(40).unwrap(),
            currency: eur,
        };
        let (transfer, _) = bank
            .request_transfer(&Request::default(), request)
            .await
            .unwrap();
        // The request is in; from here on, the process's appends: debit, record, credit,
        // record, settle, record.
        store.commit_then_fail_append(lost);
        let (state, _) = bank.transfer(transfer, Some(WAIT)).await.unwrap();
        assert_eq!(
            state,
            TransferState::Completed(request),
            "lost reply {lost}"
        );
        for (account, balance, kind) in [
            (ada, 60, MovementKind::TransferOut),
            (bob, 40, MovementKind::TransferIn),
        ] {
            assert_eq!(
                balance_now(&bank, account).await,
                balance,
                "lost reply {lost}"
            );
            let moves = bank
                .read_models()
                .statement(1, account)
                .await
                .unwrap()
                .unwrap()
                .entries;
            let of_transfer: Vec<_> = moves
                .iter()
                .filter(|entry| entry.transfer == Some(transfer))
                .map(|entry| entry.kind)
                .collect();
            assert_eq!(of_transfer, [kind], "lost reply {lost}");
        }
        running.stop().await.unwrap();
    }
}

async fn balance_now<S, R>(bank: &bank::Bank<S, R>, account: AccountId) -> i64
where
    S: decider_core::EventStore + Clone,
    R: ReadModels,
{
    bank.account_now(account, WAIT).await.unwrap().balance
}

#[tokio::test]
async fn the_demo_runs_on_the_memory_store() {
    let running = bank::in_memory();
    let mut out = Vec::new();
    demo::run(running.bank(), &mut out).await.unwrap();
    check_demo_report(&String::from_utf8(out).unwrap());
    running.stop().await.unwrap();
}

#[cfg(feature = "eventstoredb")]
#[tokio::test]
async fn the_demo_runs_on_the_eventstoredb_protocol_double() {
    let running = support::eventstoredb_double_bank().await;
    let mut out = Vec::new();
    demo::run(running.bank(), &mut out).await.unwrap();
    check_demo_report(&String::from_utf8(out).unwrap());
    running.stop().await.unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn the_demo_runs_on_postgres() {
    let (running, store) = support::postgres_bank().await;
    let mut out = Vec::new();
    demo::run(running.bank(), &mut out).await.unwrap();
    check_demo_report(&String::from_utf8(out).unwrap());
    running.stop().await.unwrap();
    support::pg::drop_store(store).await;
}

fn check_demo_report(report: &str) {
    for line in [
        "Ada → Bob 30.00 EUR                        completed",
        "failed, source refunded: currency mismatch",
        "failed, source refunded: the account is closed",
        "failed, nothing moved: insufficient funds",
        "same transfer: true, replayed: true",
        "Ada         55.00 EUR",
        "Bob         50.00 EUR",
        "Carol       50.00 USD",
        "Dave         0.00 EUR (closed)",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }
    // The order of the two transfers out of Ada's account may vary; the refund is there.
    assert!(
        report
            .lines()
            .any(|line| line.contains("transfer_refund") && line.contains(" 5.00 →")),
        "no refund in Ada's ledger:\n{report}"
    );
}

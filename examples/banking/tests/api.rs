//! The HTTP API's answers, on each store: bad input of every kind gets its status and code and
//! writes nothing; reads can wait for their own writes; correlation ids travel onto the events;
//! a store that fails answers 503, a conflict that outlasts the retries 409.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::inconsistent_digit_grouping
)]

mod support;

use banking::account::AccountId;
use banking::bank::Running;
use banking::read_model::ReadModels;
use decider_core::{EventStore, StoreError, StreamId};
use serde_json::json;
use support::{Server, code};
use uuid::Uuid;

#[tokio::test]
async fn bad_input_on_the_memory_store_is_refused_and_writes_nothing() {
    bad_input(support::memory_bank()).await;
}

#[cfg(feature = "eventstoredb")]
#[tokio::test]
async fn bad_input_on_the_eventstoredb_protocol_double_is_refused_and_writes_nothing() {
    bad_input(support::eventstoredb_double_bank().await).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn bad_input_on_sqlite_is_refused_and_writes_nothing() {
    let (running, _file) = support::sqlite_bank().await;
    bad_input(running).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn bad_input_on_postgres_is_refused_and_writes_nothing() {
    let (running, store) = support::postgres_bank().await;
    bad_input(running).await;
    support::pg::drop_store(store).await;
}

/// What is wrong, the path, the body, the idempotency key, the status and code expected.
type Case<'a> = (
    &'a str,
    String,
    serde_json::Value,
    Option<&'a str>,
    u16,
    &'a str,
);

async fn bad_input<S: EventStore + Clone, R: ReadModels>(running: Running<S, R>) {
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let ada = support::open(&server, "Ada", "EUR", None).await;
    let usd = support::open(&server, "Carol", "USD", None).await;
    let closed = support::open(&server, "Dave", "EUR", None).await;
    let deposit = server
        .post(
            &format!("/accounts/{ada}/deposits"),
            json!({ "amount": 100 }),
            None,
        )
        .await;
    assert_eq!(deposit.0, 201);
    let close = server
        .post(&format!("/accounts/{closed}/close"), json!({}), None)
        .await;
    assert_eq!(close.0, 200);
    let head = bank.store().head_position().await.unwrap();

    let unknown = Uuid::new_v4();
    let long_key = "k".repeat(256);
    let deposits = format!("/accounts/{ada}/deposits");
    let cases: Vec<Case<'_>> = vec![
        (
            "unknown field",
            "/accounts".into(),
            json!({ "owner": "Eve", "currency": "EUR", "colour": "red" }),
            None,
            400,
            "malformed_request",
        ),
        (
            "missing field",
            "/accounts".into(),
            json!({ "owner": "Eve" }),
            None,
            400,
            "malformed_request",
        ),
        (
            "bad currency",
            "/accounts".into(),
            json!({ "owner": "Eve", "currency": "euro" }),
            None,
            400,
            "invalid_currency",
        ),
        (
            "blank owner",
            "/accounts".into(),
            json!({ "owner": " ", "currency": "EUR" }),
            None,
            400,
            "invalid_owner",
        ),
        (
            // PostgreSQL cannot hold U+0000 as text; no store is asked to.
            "owner holding U+0000",
            "/accounts".into(),
            json!({ "owner": "Ada\u{0}", "currency": "EUR" }),
            None,
            400,
            "invalid_owner",
        ),
        (
            "owner holding a line break",
            "/accounts".into(),
            json!({ "owner": "Ada\nLovelace", "currency": "EUR" }),
            None,
            400,
            "invalid_owner",
        ),
        (
            "negative overdraft",
            "/accounts".into(),
            json!({ "owner": "Eve", "currency": "EUR", "overdraft_limit": -1 }),
            None,
            400,
            "invalid_amount",
        ),
        (
            "zero amount",
            deposits.clone(),
            json!({ "amount": 0 }),
            None,
            400,
            "invalid_amount",
        ),
        (
            "negative amount",
            deposits.clone(),
            json!({ "amount": -5 }),
            None,
            400,
            "invalid_amount",
        ),
        (
            "amount as text",
            deposits.clone(),
            json!({ "amount": "5" }),
            None,
            400,
            "malformed_request",
        ),
        (
            "fractional amount",
            deposits.clone(),
            json!({ "amount": 1.5 }),
            None,
            400,
            "malformed_request",
        ),
        (
            "huge amount",
            deposits.clone(),
            json!({ "amount": 1e30 }),
            None,
            400,
            "malformed_request",
        ),
        (
            "idempotency key too long",
            deposits.clone(),
            json!({ "amount": 5 }),
            Some(long_key.as_str()),
            400,
            "invalid_idempotency_key",
        ),
        (
            "malformed account id",
            "/accounts/not-a-uuid/deposits".into(),
            json!({ "amount": 5 }),
            None,
            400,
            "malformed_request",
        ),
        (
            "unknown account",
            format!("/accounts/{unknown}/deposits"),
            json!({ "amount": 5 }),
            None,
            404,
            "account_not_found",
        ),
        (
            "unknown account withdrawal",
            format!("/accounts/{unknown}/withdrawals"),
            json!({ "amount": 5 }),
            None,
            404,
            "account_not_found",
        ),
        (
            "insufficient funds",
            format!("/accounts/{ada}/withdrawals"),
            json!({ "amount": 101 }),
            None,
            422,
            "insufficient_funds",
        ),
        (
            "closing with money",
            format!("/accounts/{ada}/close"),
            json!({}),
            None,
            422,
            "nonzero_balance",
        ),
        (
            "deposit to a closed account",
            format!("/accounts/{closed}/deposits"),
            json!({ "amount": 5 }),
            None,
            422,
            "account_closed",
        ),
        (
            "balance overflow",
            deposits.clone(),
            json!({ "amount": i64::MAX }),
            None,
            422,
            "balance_overflow",
        ),
        (
            "transfer to itself",
            "/transfers".into(),
            json!({ "from": ada, "to": ada, "amount": 5, "currency": "EUR" }),
            None,
            422,
            "same_account",
        ),
        (
            "transfer from an unknown account",
            "/transfers".into(),
            json!({ "from": unknown, "to": ada, "amount": 5, "currency": "EUR" }),
            None,
            404,
            "account_not_found",
        ),
        (
            "transfer to an unknown account",
            "/transfers".into(),
            json!({ "from": ada, "to": unknown, "amount": 5, "currency": "EUR" }),
            None,
            404,
            "account_not_found",
        ),
        (
            "transfer of nothing",
            "/transfers".into(),
            json!({ "from": ada, "to": usd, "amount": 0, "currency": "EUR" }),
            None,
            400,
            "invalid_amount",
        ),
        (
            "transfer with a bad id",
            "/transfers".into(),
            json!({ "from": "x", "to": usd, "amount": 5, "currency": "EUR" }),
            None,
            400,
            "malformed_request",
        ),
    ];
    for (what, path, body, key, status, expected) in cases {
        let answer = server.post(&path, body, key).await;
        assert_eq!(
            (answer.0, code(&answer)),
            (status, expected),
            "{what}: {answer:?}"
        );
        assert!(
            answer.1["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(
        bank.store().head_position().await.unwrap(),
        head,
        "a refused request wrote something"
    );
    // The refusal was for the reason given: a smaller deposit goes through.
    assert_eq!(
        server.post(&deposits, json!({ "amount": 1 }), None).await.0,
        201
    );
    let head = bank.store().head_position().await.unwrap();
    for (what, body, content_type) in [
        ("not JSON", "{", "application/json"),
        ("no JSON content type", r#"{"amount": 5}"#, "text/plain"),
        ("empty body", "", "application/json"),
    ] {
        let answer = server.post_raw(&deposits, body, content_type).await;
        assert_eq!(
            (answer.0, code(&answer)),
            (400, "malformed_request"),
            "{what}: {answer:?}"
        );
    }
    for (path, status, expected) in [
        (format!("/accounts/{unknown}"), 404, "account_not_found"),
        (
            format!("/accounts/{unknown}/ledger"),
            404,
            "account_not_found",
        ),
        ("/accounts/nope".to_owned(), 400, "malformed_request"),
        (
            format!("/accounts/{ada}?after=yesterday"),
            400,
            "invalid_position",
        ),
        (
            format!("/accounts/{ada}?colour=red"),
            400,
            "malformed_request",
        ),
        (
            format!("/accounts/{ada}?wait_ms=-1"),
            400,
            "malformed_request",
        ),
        (format!("/transfers/{unknown}"), 404, "transfer_not_found"),
        ("/nowhere".to_owned(), 404, "no_such_route"),
    ] {
        let answer = server.get(&path).await;
        assert_eq!(
            (answer.0, code(&answer)),
            (status, expected),
            "GET {path}: {answer:?}"
        );
    }
    assert_eq!(
        bank.store().head_position().await.unwrap(),
        head,
        "a refused request wrote something"
    );

    server.shutdown().await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn reads_wait_for_their_own_writes_on_the_memory_store() {
    read_your_writes(support::memory_bank()).await;
}

#[cfg(feature = "eventstoredb")]
#[tokio::test]
async fn reads_wait_for_their_own_writes_on_the_eventstoredb_protocol_double() {
    read_your_writes(support::eventstoredb_double_bank().await).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn reads_wait_for_their_own_writes_on_sqlite() {
    let (running, _file) = support::sqlite_bank().await;
    read_your_writes(running).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn reads_wait_for_their_own_writes_on_postgres() {
    let (running, store) = support::postgres_bank().await;
    read_your_writes(running).await;
    support::pg::drop_store(store).await;
}

async fn read_your_writes<S: EventStore + Clone, R: ReadModels>(running: Running<S, R>) {
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let ada = support::open(&server, "Ada", "EUR", Some(1_000)).await;
    let mut balance = 0;
    for (writes, amount) in [50_i64, 70, -200, 30].into_iter().enumerate() {
        let path = if amount > 0 {
            "deposits"
        } else {
            "withdrawals"
        };
        let write = server
            .post(
                &format!("/accounts/{ada}/{path}"),
                json!({ "amount": amount.abs() }),
                None,
            )
            .await;
        assert_eq!(write.0, 201, "{write:?}");
        balance += amount;
        let position = write.1["position"].as_str().unwrap();
        let read = server
            .get(&format!("/accounts/{ada}?after={position}&wait_ms=5000"))
            .await;
        assert_eq!(read.0, 200, "{read:?}");
        assert_eq!(read.1["balance"], balance, "{read:?}");
        assert_eq!(read.1["version"], write.1["version"]);
        assert_eq!(read.1["overdraft_limit"], 1_000);
        let ledger = server
            .get(&format!(
                "/accounts/{ada}/ledger?after={position}&wait_ms=5000"
            ))
            .await;
        assert_eq!(
            ledger.1["entries"].as_array().map(Vec::len),
            Some(writes + 1)
        );
    }
    // A position the read model will not reach in time: 504, after the wait asked for.
    let started = std::time::Instant::now();
    let late = server
        .get(&format!(
            "/accounts/{ada}?after=18446744073709551615/0&wait_ms=100"
        ))
        .await;
    assert_eq!(
        (late.0, code(&late)),
        (504, "read_model_timeout"),
        "{late:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(100));

    // A transfer, read back once it is done.
    let bob = support::open(&server, "Bob", "EUR", None).await;
    let done = support::transfer(&server, &ada, &bob, 25, "pay-bob").await;
    assert_eq!(done.1["amount"], 25);

    server.shutdown().await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn correlation_ids_come_back_and_land_on_the_events() {
    let running = support::memory_bank();
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let ada = support::open(&server, "Ada", "EUR", None).await;
    let correlation = Uuid::new_v4();
    let response = server
        .client()
        .post(server.url(&format!("/accounts/{ada}/deposits")))
        .header("X-Correlation-Id", correlation.to_string())
        .json(&json!({ "amount": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-correlation-id"].to_str().unwrap(),
        correlation.to_string()
    );
    let stream = AccountId(Uuid::parse_str(&ada).unwrap()).stream();
    let last = last_event(bank.store(), &stream).await;
    assert_eq!(last.metadata.correlation_id, Some(correlation));
    // Without one, the server makes one and says which.
    let answer = server
        .client()
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert!(Uuid::parse_str(answer.headers()["x-correlation-id"].to_str().unwrap()).is_ok());
    let answer = support::answer(answer).await;
    assert_eq!(answer.0, 200);
    assert_eq!(answer.1["status"], "ok");
    server.shutdown().await;
    running.stop().await.unwrap();
}

async fn last_event<S: EventStore>(store: &S, stream: &StreamId) -> decider_core::RecordedEvent {
    store.last_event(stream).await.unwrap().unwrap()
}

#[tokio::test]
async fn an_unavailable_store_is_503_and_a_lasting_conflict_409() {
    let store = decider_store_memory::MemoryStore::new();
    let running = banking::bank::in_memory_on(store.clone());
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let ada = support::open(&server, "Ada", "EUR", None).await;
    let deposits = format!("/accounts/{ada}/deposits");

    // A keyed command rides out a short outage (the handler retries it)…
    store.fail_append(1, StoreError::unavailable("the disk is on fire"));
    store.fail_append(2, StoreError::unavailable("the disk is on fire"));
    let answer = server
        .post(&deposits, json!({ "amount": 2 }), Some("d0"))
        .await;
    assert_eq!(answer.0, 201, "{answer:?}");
    // …but not a long one: the first attempt and its five retries fail.
    for nth in 1..=6 {
        store.fail_append(nth, StoreError::unavailable("the disk is on fire"));
    }
    let answer = server
        .post(&deposits, json!({ "amount": 5 }), Some("d1"))
        .await;
    assert_eq!(
        (answer.0, code(&answer)),
        (503, "store_unavailable"),
        "{answer:?}"
    );
    // Sent again with its key once the store is back: done once.
    let answer = server
        .post(&deposits, json!({ "amount": 5 }), Some("d1"))
        .await;
    assert_eq!(answer.0, 201, "{answer:?}");

    // Every attempt of the handler (the first and its 10 retries) loses a race.
    let stream = AccountId(Uuid::parse_str(&ada).unwrap()).stream();
    for nth in 1..=11 {
        store.fail_append(
            nth,
            StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected: decider_core::ExpectedVersion::Exact(1),
                actual: Some(1),
            },
        );
    }
    let answer = server
        .post(&deposits, json!({ "amount": 7 }), Some("d2"))
        .await;
    assert_eq!(
        (answer.0, code(&answer)),
        (409, "concurrency_conflict"),
        "{answer:?}"
    );
    let view = server
        .get(&format!(
            "/accounts/{ada}?after={}&wait_ms=5000",
            last_event(&store, &stream).await.position
        ))
        .await;
    assert_eq!(
        view.1["balance"], 7,
        "only the first two deposits went through: {view:?}"
    );

    server.shutdown().await;
    running.stop().await.unwrap();
}

/// A failed transfer tells why with the refusing account's stable code, also when an older
/// version of the bank recorded the refusal as its message.
#[tokio::test]
async fn failed_transfers_answer_with_the_refusal_code() {
    let running = support::memory_bank();
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let ada = support::open(&server, "Ada", "EUR", None).await;
    let usd = support::open(&server, "Uma", "USD", None).await;
    server
        .post(
            &format!("/accounts/{ada}/deposits"),
            json!({ "amount": 50 }),
            None,
        )
        .await;

    let failed = |body: serde_json::Value| {
        let server = &server;
        async move {
            let requested = server.post("/transfers", body, None).await;
            assert_eq!(requested.0, 202, "{requested:?}");
            let id = requested.1["id"].as_str().unwrap().to_owned();
            server.get(&format!("/transfers/{id}?wait_ms=10000")).await
        }
    };
    let too_much =
        failed(json!({ "from": ada, "to": usd, "amount": 500, "currency": "EUR" })).await;
    assert_eq!(too_much.1["status"], "failed", "{too_much:?}");
    assert_eq!(too_much.1["reason_code"], "insufficient_funds");
    assert_eq!(too_much.1["compensated"], false);
    let mismatch = failed(json!({ "from": ada, "to": usd, "amount": 5, "currency": "EUR" })).await;
    assert_eq!(mismatch.1["status"], "failed", "{mismatch:?}");
    assert_eq!(mismatch.1["reason_code"], "currency_mismatch");
    assert_eq!(mismatch.1["compensated"], true);
    assert!(
        mismatch.1["reason"]
            .as_str()
            .unwrap()
            .starts_with("currency mismatch: the account holds USD"),
        "{mismatch:?}"
    );

    // A transfer as versions before typed refusals stored it.
    let old = Uuid::new_v4();
    let stream = StreamId::new(format!("transfer-{old}")).unwrap();
    let requested = format!(
        r#"{{"from":"{ada}","to":"{}","amount":5,"currency":"EUR"}}"#,
        Uuid::new_v4()
    );
    let events = [
        ("Requested", requested.as_str()),
        ("Debited", "null"),
        ("CreditRefused", r#"{"reason":"the account is closed"}"#),
        ("Refunded", "null"),
    ]
    .map(|(kind, payload)| decider_core::EventData::json(kind, payload.to_owned()));
    bank.store()
        .append(
            &stream,
            decider_core::ExpectedVersion::NoStream,
            events.to_vec(),
        )
        .await
        .unwrap();
    let shown = server.get(&format!("/transfers/{old}")).await;
    assert_eq!(shown.0, 200, "{shown:?}");
    assert_eq!(shown.1["status"], "failed");
    assert_eq!(shown.1["reason"], "the account is closed");
    assert_eq!(shown.1["reason_code"], "account_closed");
    assert_eq!(shown.1["compensated"], true);

    server.shutdown().await;
    running.stop().await.unwrap();
}

//! The HTTP API: JSON in and out, over a [`Bank`].
//!
//! | request | answer |
//! |---|---|
//! | `POST /accounts` `{"owner","currency","overdraft_limit"?}` | 201, the account id |
//! | `POST /accounts/{id}/deposits` `{"amount"}` | 201 |
//! | `POST /accounts/{id}/withdrawals` `{"amount"}` | 201 |
//! | `POST /accounts/{id}/close` | 200 |
//! | `POST /transfers` `{"from","to","amount","currency"}` | 202, the transfer id |
//! | `GET /accounts/{id}` | balance, from the read model |
//! | `GET /accounts/{id}/ledger` | every movement with its running balance |
//! | `GET /transfers/{id}` | where the transfer is |
//! | `GET /health` | `ok` (200), `degraded` (503: the store is away or a projection recovers) or `failed` (503: a projection stopped); the store and each projection's state, checkpoint and lag |
//!
//! Every POST takes an `Idempotency-Key` header: a request sent again with the same key gets the
//! first outcome (`"replayed": true`) and changes nothing. Keys are the client's to make unique
//! (a UUID per intended operation): this example has no users to scope them by, so the same key
//! sent by two clients names one account or one transfer. Every write answers with the
//! `position` of its events; `GET /accounts/{id}?after=<position>&wait_ms=<n>` waits up to `n`
//! ms for the read model to reach it (read-your-writes), and `GET /transfers/{id}?wait_ms=<n>`
//! waits for the transfer to finish. `X-Correlation-Id` (a UUID) is taken from the request or
//! made, put on every event the request writes and on its log lines, and sent back.
//!
//! Errors are `{"error": {"code", "message"}}` with a stable `code`: 400 for malformed input,
//! 404 for unknown accounts or transfers, 409 for a concurrency conflict that outlasted the
//! retries, 422 for a business rule, 503 when the store is unavailable, 504 when the read model
//! did not catch up in time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use decider_core::projection::{ProjectionStatus, RunnerState};
use decider_core::{EventStore, Position};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::account::{AccountCommand, AccountError, AccountId};
use crate::bank::{Bank, BankError, Consistency, Receipt, Request};
use crate::money::{Amount, Currency};
use crate::read_model::ReadModels;
use crate::transfer::{Step, TransferError, TransferId, TransferRequest, TransferState};

/// The longest a read may ask to wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The API's routes over `bank`.
pub fn router<S, R>(bank: Arc<Bank<S, R>>) -> Router
where
    S: EventStore + Clone,
    R: ReadModels,
{
    Router::new()
        .route("/accounts", post(open_account::<S, R>))
        .route("/accounts/{id}", get(account::<S, R>))
        .route("/accounts/{id}/ledger", get(ledger::<S, R>))
        .route("/accounts/{id}/deposits", post(deposit::<S, R>))
        .route("/accounts/{id}/withdrawals", post(withdraw::<S, R>))
        .route("/accounts/{id}/close", post(close::<S, R>))
        .route("/transfers", post(request_transfer::<S, R>))
        .route("/transfers/{id}", get(transfer::<S, R>))
        .route("/health", get(health::<S, R>))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_route", "no such route")
        })
        .layer(middleware::from_fn(correlate))
        .with_state(bank)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the requests in hand.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The request's correlation id, from `X-Correlation-Id` or made.
#[derive(Debug, Clone, Copy)]
struct CorrelationId(Uuid);

const CORRELATION_HEADER: &str = "x-correlation-id";

async fn correlate(mut request: HttpRequest, next: Next) -> Response {
    let id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Uuid::parse_str(value).ok())
        .unwrap_or_else(Uuid::new_v4);
    request.extensions_mut().insert(CorrelationId(id));
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        correlation_id = %id,
    );
    async move {
        let mut response = next.run(request).await;
        tracing::info!(status = response.status().as_u16(), "answered");
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        response
    }
    .instrument(span)
    .await
}

/// An error answer: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<BankError> for ApiError {
    fn from(error: BankError) -> Self {
        use StatusCode as S;
        let message = error.to_string();
        let (status, code) = match &error {
            BankError::Account(refusal) => match refusal {
                AccountError::InsufficientFunds { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "insufficient_funds")
                }
                AccountError::CurrencyMismatch { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "currency_mismatch")
                }
                AccountError::BalanceOverflow => (S::UNPROCESSABLE_ENTITY, "balance_overflow"),
                AccountError::NonZeroBalance(_) => (S::UNPROCESSABLE_ENTITY, "nonzero_balance"),
                AccountError::TransfersInFlight(_) => {
                    (S::UNPROCESSABLE_ENTITY, "transfers_in_flight")
                }
                AccountError::InvalidOwner => (S::BAD_REQUEST, "invalid_owner"),
                AccountError::AlreadyOpen => (S::CONFLICT, "account_exists"),
                AccountError::NotOpen => (S::NOT_FOUND, "account_not_found"),
                AccountError::NoTransferInFlight(_) | AccountError::TransferAlreadyDebited(_) => {
                    (S::UNPROCESSABLE_ENTITY, "rejected")
                }
            },
            BankError::Transfer(TransferError::SameAccount) => {
                (S::UNPROCESSABLE_ENTITY, "same_account")
            }
            BankError::Transfer(TransferError::AlreadyRequested) => {
                (S::CONFLICT, "transfer_exists")
            }
            BankError::Transfer(_) => (S::UNPROCESSABLE_ENTITY, "rejected"),
            BankError::AccountClosed => (S::UNPROCESSABLE_ENTITY, "account_closed"),
            BankError::TransferNotFound => (S::NOT_FOUND, "transfer_not_found"),
            BankError::AccountNotFound => (S::NOT_FOUND, "account_not_found"),
            BankError::Conflict(_) => (S::CONFLICT, "concurrency_conflict"),
            BankError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "store_unavailable"),
            BankError::ReadModelBehind { .. } => (S::GATEWAY_TIMEOUT, "read_model_timeout"),
            BankError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, message)
    }
}

/// A JSON body, or the 400 that says what is wrong with it.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body)
        .map_err(|rejection| ApiError::bad_request("malformed_request", rejection.body_text()))
}

fn amount(minor_units: i64) -> Result<Amount, ApiError> {
    Amount::try_from(minor_units)
        .map_err(|error| ApiError::bad_request("invalid_amount", error.to_string()))
}

fn currency(code: &str) -> Result<Currency, ApiError> {
    code.parse()
        .map_err(|error: crate::money::InvalidCurrency| {
            ApiError::bad_request("invalid_currency", error.to_string())
        })
}

fn account_id(id: &str) -> Result<AccountId, ApiError> {
    Uuid::parse_str(id).map(AccountId).map_err(|_| {
        ApiError::bad_request(
            "malformed_request",
            format!("{id:?} is not an account id (a UUID)"),
        )
    })
}

/// The request context from the headers: the idempotency key, checked, and the correlation id.
fn request(headers: &HeaderMap, correlation: CorrelationId) -> Result<Request, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|key| (1..=255).contains(&key.len()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(key.to_owned())
        }
    };
    Ok(Request {
        idempotency_key,
        correlation_id: Some(correlation.0),
    })
}

/// A write's answer: its receipt, with the position as a string a read can pass back.
#[derive(Debug, Serialize)]
struct Written<T: Serialize> {
    #[serde(flatten)]
    body: T,
    version: Option<u64>,
    position: Option<String>,
    replayed: bool,
}

fn written<T: Serialize>(status: StatusCode, body: T, receipt: Receipt) -> Response {
    let written = Written {
        body,
        version: receipt.version,
        position: receipt.position.map(|position| position.to_string()),
        replayed: receipt.replayed,
    };
    (status, Json(written)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenAccountBody {
    owner: String,
    currency: String,
    overdraft_limit: Option<i64>,
}

async fn open_account<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
    payload: Result<Json<OpenAccountBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let OpenAccountBody {
        owner,
        currency: code,
        overdraft_limit,
    } = body(payload)?;
    let currency = currency(&code)?;
    let overdraft_limit = overdraft_limit
        .filter(|limit| *limit != 0)
        .map(amount)
        .transpose()?;
    let request = request(&headers, correlation)?;
    let (id, receipt) = bank
        .open_account(&request, owner, currency, overdraft_limit)
        .await?;
    let mut response = written(StatusCode::CREATED, json!({ "id": id }), receipt);
    if let Ok(location) = HeaderValue::from_str(&format!("/accounts/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    amount: i64,
}

async fn deposit<S: EventStore + Clone, R: ReadModels>(
    state: State<Arc<Bank<S, R>>>,
    correlation: Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    payload: Result<Json<AmountBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let amount = amount(body(payload)?.amount)?;
    account_command(
        state,
        correlation,
        &id,
        &headers,
        AccountCommand::Deposit { amount },
    )
    .await
}

async fn withdraw<S: EventStore + Clone, R: ReadModels>(
    state: State<Arc<Bank<S, R>>>,
    correlation: Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    payload: Result<Json<AmountBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let amount = amount(body(payload)?.amount)?;
    account_command(
        state,
        correlation,
        &id,
        &headers,
        AccountCommand::Withdraw { amount },
    )
    .await
}

async fn close<S: EventStore + Clone, R: ReadModels>(
    state: State<Arc<Bank<S, R>>>,
    correlation: Extension<CorrelationId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut response =
        account_command(state, correlation, &id, &headers, AccountCommand::Close).await?;
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

async fn account_command<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
    Extension(correlation): Extension<CorrelationId>,
    id: &str,
    headers: &HeaderMap,
    command: AccountCommand,
) -> Result<Response, ApiError> {
    let id = account_id(id)?;
    let request = request(headers, correlation)?;
    let receipt = bank.account_command(&request, id, command).await?;
    Ok(written(StatusCode::CREATED, json!({ "id": id }), receipt))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    from: Uuid,
    to: Uuid,
    amount: i64,
    currency: String,
}

async fn request_transfer<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
    payload: Result<Json<TransferBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let TransferBody {
        from,
        to,
        amount: units,
        currency: code,
    } = body(payload)?;
    let transfer = TransferRequest {
        from: AccountId(from),
        to: AccountId(to),
        amount: amount(units)?,
        currency: currency(&code)?,
    };
    let request = request(&headers, correlation)?;
    let (id, receipt) = bank.request_transfer(&request, transfer).await?;
    let mut response = written(
        StatusCode::ACCEPTED,
        json!({ "id": id, "status": "requested" }),
        receipt,
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/transfers/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    /// A write's position to wait for.
    after: Option<String>,
    /// How long to wait, in ms.
    wait_ms: Option<u64>,
}

impl ReadParams {
    fn parse(params: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        params
            .map(|Query(params)| params)
            .map_err(|rejection| ApiError::bad_request("malformed_request", rejection.body_text()))
    }

    fn wait(&self) -> Option<Duration> {
        self.wait_ms
            .map(|ms| Duration::from_millis(ms).min(MAX_WAIT))
    }

    fn consistency(&self) -> Result<Option<Consistency>, ApiError> {
        let Some(after) = &self.after else {
            return Ok(None);
        };
        let position = after.parse::<Position>().map_err(|_| {
            ApiError::bad_request(
                "invalid_position",
                format!("{after:?} is not a position from a write's answer"),
            )
        })?;
        Ok(Some(Consistency {
            after: position,
            timeout: self.wait().unwrap_or(Duration::from_secs(5)),
        }))
    }
}

async fn account<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
    Path(id): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let consistency = ReadParams::parse(params)?.consistency()?;
    let view = bank.account(account_id(&id)?, consistency).await?;
    Ok(Json(json!({
        "id": view.id,
        "owner": view.owner,
        "currency": view.currency,
        "balance": view.balance,
        "overdraft_limit": view.overdraft_limit,
        "closed": view.closed,
        "version": view.version,
        "position": view.position.to_string(),
    }))
    .into_response())
}

async fn ledger<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
    Path(id): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let consistency = ReadParams::parse(params)?.consistency()?;
    let id = account_id(&id)?;
    let entries = bank.ledger(id, consistency).await?;
    Ok(Json(json!({ "id": id, "entries": entries })).into_response())
}

async fn transfer<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
    Path(id): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = ReadParams::parse(params)?;
    let id = Uuid::parse_str(&id).map(TransferId).map_err(|_| {
        ApiError::bad_request(
            "malformed_request",
            format!("{id:?} is not a transfer id (a UUID)"),
        )
    })?;
    let (state, version) = bank.transfer(id, params.wait()).await?;
    Ok(Json(transfer_view(id, &state, version)).into_response())
}

/// A transfer as the API shows it.
pub fn transfer_view(
    id: TransferId,
    state: &TransferState,
    version: Option<u64>,
) -> serde_json::Value {
    let (request, status, reason, compensated) = match state {
        TransferState::Unrequested => return json!({ "id": id, "status": "unknown" }),
        TransferState::InProgress { request, next, .. } => {
            let status = match next {
                Step::Debit => "requested",
                Step::Credit => "debited",
                Step::Settle => "credited",
                Step::Refund => "refunding",
            };
            (request, status, None, false)
        }
        TransferState::Completed(request) => (request, "completed", None, false),
        TransferState::Failed {
            request,
            reason,
            compensated,
        } => (request, "failed", Some(reason), *compensated),
    };
    json!({
        "id": id,
        "from": request.from,
        "to": request.to,
        "amount": request.amount,
        "currency": request.currency,
        "status": status,
        "reason": reason,
        "compensated": compensated,
        "version": version,
    })
}

/// `ok` (200) when the store answers and every projection runs; `degraded` (503) while the
/// store does not answer or a projection recovers from a fault (both come back by
/// themselves); `failed` (503) when a projection stopped on what retrying cannot fix (a poison
/// event): that needs an operator.
async fn health<S: EventStore + Clone, R: ReadModels>(
    State(bank): State<Arc<Bank<S, R>>>,
) -> Response {
    let statuses = bank.projections();
    let failed = statuses
        .iter()
        .any(|status| matches!(status.state, RunnerState::Failed { .. }));
    let recovering = statuses
        .iter()
        .any(|status| matches!(status.state, RunnerState::Reconnecting { .. }));
    let projections: Vec<_> = statuses.iter().map(projection_health).collect();
    let store = bank.check_store().await;
    let status = match (&store, failed, recovering) {
        (_, true, _) => "failed",
        (Err(_), false, _) | (Ok(_), false, true) => "degraded",
        (Ok(_), false, false) => "ok",
    };
    let store = match store {
        Ok(head) => json!({ "available": true, "head": head.map(|p| p.to_string()) }),
        Err(error) => json!({ "available": false, "error": error.to_string() }),
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": status, "store": store, "projections": projections });
    (code, Json(body)).into_response()
}

fn projection_health(status: &ProjectionStatus) -> serde_json::Value {
    let mut health = json!({
        "name": status.projection,
        "checkpoint": status.checkpoint.map(|p| p.to_string()),
        "head": status.head.map(|p| p.to_string()),
        "lag": status.lag,
        "handled": status.handled,
    });
    let state = match &status.state {
        RunnerState::Idle => "idle",
        RunnerState::WaitingForLease => "waiting_for_lease",
        RunnerState::CatchingUp => "catching_up",
        RunnerState::Live => "live",
        RunnerState::Stopped => "stopped",
        RunnerState::Reconnecting {
            since,
            attempts,
            last_error,
        } => {
            health["attempts"] = json!(attempts);
            health["error"] = json!(last_error);
            health["reconnecting_for_ms"] =
                json!(since.elapsed().map_or(0, |elapsed| elapsed.as_millis()));
            "reconnecting"
        }
        RunnerState::Failed { error } => {
            health["error"] = json!(error);
            "failed"
        }
    };
    health["state"] = json!(state);
    health
}

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
//! | `GET /transfers/{id}` | where the transfer is: `status` (`requested`, `debited`, `credited`, `refunding`, `completed`, `failed`) and, once an account refused a step, its `reason` and stable `reason_code` |
//! | `GET /health` | `ok` (200), `degraded` (503: the store is away or a projection recovers) or `failed` (503: a projection stopped); the store and each projection's state, checkpoint and lag |
//! | `GET /metrics` | Prometheus text: commands, appends, projections (added by `banking serve`: [`crate::metrics`]) |
//!
//! Every POST takes an `Idempotency-Key` header: a request sent again with the same key gets the
//! first outcome (`"replayed": true`) and changes nothing. Keys are the client's to make unique
//! (a UUID per intended operation): this example has no users to scope them by, so the same key
//! sent by two clients names one account or one transfer. Every write answers with the
//! `position` of its events; `GET /accounts/{id}?after=<position>&wait_ms=<n>` waits up to `n`
//! ms for the read model to reach it (read-your-writes), and `GET /transfers/{id}?wait_ms=<n>`
//! waits for the transfer to finish. `X-Correlation-Id` (a UUID) is taken from the request or
//! made, put on every event the request writes and on its log lines, and sent back. So is the W3C
//! `traceparent` (and `tracestate`): the request is a span of the caller's trace, or the root of
//! a new one when the header is absent or invalid; its events, and the transfer process's
//! commands and events, carry that trace; the answer's `traceparent` names the request's span.
//!
//! Errors are `{"error": {"code", "message"}}` with a stable `code`: 400 for malformed input,
//! 404 for unknown accounts or transfers, 409 for a concurrency conflict that outlasted the
//! retries, 422 for a business rule, 503 when the store is unavailable, 504 when the read model
//! did not catch up in time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request as HttpRequest, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use decider_core::projection::{ProjectionStatus, RunnerState};
use decider_core::{EventStore, Position, TraceParent, continue_trace, start_trace};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::account::{AccountCommand, AccountError, AccountId};
use crate::bank::{Bank, BankError, Consistency, Receipt, Request};
use crate::money::{Amount, Currency};
use crate::read_model::{AccountView, ReadModels, Statement};
use crate::transfer::{Refusal, TransferError, TransferId, TransferRequest, TransferState};

/// The longest a read may ask to wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The API's routes over `bank`.
pub fn router<S, R>(bank: Arc<Bank<S, R>>) -> Router
where
    S: EventStore + Clone,
    R: ReadModels,
{
    let bank: Shared = bank;
    Router::new()
        .route("/accounts", post(open_account))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/ledger", get(ledger))
        .route("/accounts/{id}/deposits", post(deposit))
        .route("/accounts/{id}/withdrawals", post(withdraw))
        .route("/accounts/{id}/close", post(close))
        .route("/transfers", post(request_transfer))
        .route("/transfers/{id}", get(transfer))
        .route("/health", get(health))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_route", "no such route")
        })
        .layer(middleware::from_fn(correlate))
        .with_state(bank)
}

/// A bank, whatever its store and read models: the routes' state, so that they are plain
/// functions rather than one generic instance per store.
type Shared = Arc<dyn Api>;

/// What the routes ask of a [`Bank`], as a trait an `Arc<dyn Api>` can carry.
trait Api: Send + Sync {
    fn open_account<'a>(
        &'a self,
        request: &'a Request,
        owner: String,
        currency: Currency,
        overdraft_limit: Option<Amount>,
    ) -> BoxFuture<'a, Result<(AccountId, Receipt), BankError>>;

    fn account_command<'a>(
        &'a self,
        request: &'a Request,
        id: AccountId,
        command: AccountCommand,
    ) -> BoxFuture<'a, Result<Receipt, BankError>>;

    fn request_transfer<'a>(
        &'a self,
        request: &'a Request,
        transfer: TransferRequest,
    ) -> BoxFuture<'a, Result<(TransferId, Receipt), BankError>>;

    fn transfer(
        &self,
        id: TransferId,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<(TransferState, Option<u64>), BankError>>;

    fn account(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> BoxFuture<'_, Result<AccountView, BankError>>;

    fn statement(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> BoxFuture<'_, Result<(u32, Statement), BankError>>;

    fn projections(&self) -> Vec<ProjectionStatus>;

    fn check_store(&self) -> BoxFuture<'_, Result<Option<Position>, BankError>>;
}

impl<S: EventStore + Clone, R: ReadModels> Api for Bank<S, R> {
    fn open_account<'a>(
        &'a self,
        request: &'a Request,
        owner: String,
        currency: Currency,
        overdraft_limit: Option<Amount>,
    ) -> BoxFuture<'a, Result<(AccountId, Receipt), BankError>> {
        Box::pin(Bank::open_account(
            self,
            request,
            owner,
            currency,
            overdraft_limit,
        ))
    }

    fn account_command<'a>(
        &'a self,
        request: &'a Request,
        id: AccountId,
        command: AccountCommand,
    ) -> BoxFuture<'a, Result<Receipt, BankError>> {
        Box::pin(Bank::account_command(self, request, id, command))
    }

    fn request_transfer<'a>(
        &'a self,
        request: &'a Request,
        transfer: TransferRequest,
    ) -> BoxFuture<'a, Result<(TransferId, Receipt), BankError>> {
        Box::pin(Bank::request_transfer(self, request, transfer))
    }

    fn transfer(
        &self,
        id: TransferId,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<(TransferState, Option<u64>), BankError>> {
        Box::pin(Bank::transfer(self, id, wait))
    }

    fn account(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> BoxFuture<'_, Result<AccountView, BankError>> {
        Box::pin(Bank::account(self, id, consistency))
    }

    fn statement(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> BoxFuture<'_, Result<(u32, Statement), BankError>> {
        Box::pin(Bank::statement(self, id, consistency))
    }

    fn projections(&self) -> Vec<ProjectionStatus> {
        Bank::projections(self)
    }

    fn check_store(&self) -> BoxFuture<'_, Result<Option<Position>, BankError>> {
        Box::pin(Bank::check_store(self))
    }
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
    let caller = caller_trace(request.headers());
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        correlation_id = %id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_id = caller.map(|caller| tracing::field::display(caller.parent_id)),
    );
    let trace = Trace {
        span: match caller {
            Some(caller) => caller.with_parent_id(continue_trace(&span, &caller)),
            None => start_trace(&span),
        },
        state: caller
            .and_then(|_| request.headers().get(TRACESTATE_HEADER))
            .and_then(|value| value.to_str().ok())
            .map(Box::from),
    };
    span.record("trace_id", tracing::field::display(trace.span.trace_id));
    span.record("span_id", tracing::field::display(trace.span.parent_id));
    request.extensions_mut().insert(trace.clone());
    async move {
        let mut response = next.run(request).await;
        tracing::info!(status = response.status().as_u16(), "answered");
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        if let Ok(value) = HeaderValue::from_str(&trace.span.to_string()) {
            response.headers_mut().insert(TRACEPARENT_HEADER, value);
        }
        response
    }
    .instrument(span)
    .await
}

const TRACEPARENT_HEADER: &str = "traceparent";
const TRACESTATE_HEADER: &str = "tracestate";

/// The request's place in a W3C trace.
#[derive(Debug, Clone)]
struct Trace {
    /// The request's own span: the caller's trace, or a new one, with the request as parent
    /// of what it causes.
    span: TraceParent,
    /// The caller's `tracestate`, passed on with its trace.
    state: Option<Box<str>>,
}

/// The caller's trace, from `traceparent`: an invalid header is ignored, as the W3C
/// recommendation says, and the request starts a trace of its own rather than failing.
fn caller_trace(headers: &HeaderMap) -> Option<TraceParent> {
    headers.get(TRACEPARENT_HEADER)?.to_str().ok()?.parse().ok()
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
            BankError::Account(refusal) => refusal_code(refusal),
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
            BankError::InvalidInput(_) => (S::BAD_REQUEST, "invalid_input"),
            BankError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, message)
    }
}

/// The status and stable code of an account's refusal: the same code answers a refused request
/// and names why a transfer failed.
fn refusal_code(refusal: &AccountError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match refusal {
        AccountError::InsufficientFunds { .. } => (S::UNPROCESSABLE_ENTITY, "insufficient_funds"),
        AccountError::CurrencyMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "currency_mismatch"),
        AccountError::BalanceOverflow => (S::UNPROCESSABLE_ENTITY, "balance_overflow"),
        AccountError::NonZeroBalance(_) => (S::UNPROCESSABLE_ENTITY, "nonzero_balance"),
        AccountError::TransfersInFlight(_) => (S::UNPROCESSABLE_ENTITY, "transfers_in_flight"),
        AccountError::Closed => (S::UNPROCESSABLE_ENTITY, "account_closed"),
        AccountError::InvalidOwner => (S::BAD_REQUEST, "invalid_owner"),
        AccountError::AlreadyOpen => (S::CONFLICT, "account_exists"),
        AccountError::NotOpen => (S::NOT_FOUND, "account_not_found"),
        AccountError::NoTransferInFlight(_) | AccountError::TransferAlreadyDebited(_) => {
            (S::UNPROCESSABLE_ENTITY, "rejected")
        }
    }
}

/// A JSON body; malformed, it is answered with a 400 that says what is wrong with it.
#[derive(Debug)]
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: HttpRequest, state: &S) -> Result<Self, ApiError> {
        let Json(body) =
            Json::from_request(request, state)
                .await
                .map_err(|rejection: JsonRejection| {
                    ApiError::bad_request("malformed_request", rejection.body_text())
                })?;
        Ok(Self(body))
    }
}

/// The query string; malformed, it is answered with a 400.
#[derive(Debug)]
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::from_request_parts(parts, state).await.map_err(
            |rejection: QueryRejection| {
                ApiError::bad_request("malformed_request", rejection.body_text())
            },
        )?;
        Ok(Self(params))
    }
}

/// The `{id}` of the path as a UUID, or a 400 naming what it should have been.
async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    what: &str,
) -> Result<Uuid, ApiError> {
    let Path(id) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::bad_request("malformed_request", rejection.body_text()))?;
    Uuid::parse_str(&id).map_err(|_| {
        ApiError::bad_request(
            "malformed_request",
            format!("{id:?} is not {what} (a UUID)"),
        )
    })
}

impl<S: Send + Sync> FromRequestParts<S> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_id(parts, state, "an account id").await.map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TransferId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_id(parts, state, "a transfer id").await.map(Self)
    }
}

/// The request context from the headers: the idempotency key, checked, and the correlation id
/// and trace the correlation middleware settled on.
impl<S: Send + Sync> FromRequestParts<S> for Request {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let idempotency_key = match parts.headers.get("idempotency-key") {
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
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .map(|correlation| correlation.0);
        let trace = parts.extensions.get::<Trace>();
        Ok(Self {
            idempotency_key,
            correlation_id,
            trace_parent: trace.map(|trace| trace.span),
            trace_state: trace.and_then(|trace| trace.state.clone()),
        })
    }
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

/// A write's answer that created something at `location`.
fn created<T: Serialize>(
    status: StatusCode,
    body: T,
    receipt: Receipt,
    location: &str,
) -> Response {
    let mut response = written(status, body, receipt);
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenAccountBody {
    owner: String,
    currency: String,
    overdraft_limit: Option<i64>,
}

async fn open_account(
    State(bank): State<Shared>,
    request: Request,
    Body(body): Body<OpenAccountBody>,
) -> Result<Response, ApiError> {
    let currency = currency(&body.currency)?;
    let overdraft_limit = body
        .overdraft_limit
        .filter(|limit| *limit != 0)
        .map(amount)
        .transpose()?;
    let (id, receipt) = bank
        .open_account(&request, body.owner, currency, overdraft_limit)
        .await?;
    let location = format!("/accounts/{id}");
    Ok(created(
        StatusCode::CREATED,
        json!({ "id": id }),
        receipt,
        &location,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    amount: i64,
}

async fn deposit(
    State(bank): State<Shared>,
    id: AccountId,
    request: Request,
    Body(body): Body<AmountBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::Deposit {
        amount: amount(body.amount)?,
    };
    let receipt = bank.account_command(&request, id, command).await?;
    Ok(written(StatusCode::CREATED, json!({ "id": id }), receipt))
}

async fn withdraw(
    State(bank): State<Shared>,
    id: AccountId,
    request: Request,
    Body(body): Body<AmountBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::Withdraw {
        amount: amount(body.amount)?,
    };
    let receipt = bank.account_command(&request, id, command).await?;
    Ok(written(StatusCode::CREATED, json!({ "id": id }), receipt))
}

async fn close(
    State(bank): State<Shared>,
    id: AccountId,
    request: Request,
) -> Result<Response, ApiError> {
    let receipt = bank
        .account_command(&request, id, AccountCommand::Close)
        .await?;
    Ok(written(StatusCode::OK, json!({ "id": id }), receipt))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    from: AccountId,
    to: AccountId,
    amount: i64,
    currency: String,
}

async fn request_transfer(
    State(bank): State<Shared>,
    request: Request,
    Body(body): Body<TransferBody>,
) -> Result<Response, ApiError> {
    let transfer = TransferRequest {
        from: body.from,
        to: body.to,
        amount: amount(body.amount)?,
        currency: currency(&body.currency)?,
    };
    let (id, receipt) = bank.request_transfer(&request, transfer).await?;
    let body = json!({ "id": id, "status": "requested" });
    let location = format!("/transfers/{id}");
    Ok(created(StatusCode::ACCEPTED, body, receipt, &location))
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

async fn account(
    State(bank): State<Shared>,
    id: AccountId,
    Params(params): Params<ReadParams>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(bank.account(id, params.consistency()?).await?))
}

async fn ledger(
    State(bank): State<Shared>,
    id: AccountId,
    Params(params): Params<ReadParams>,
) -> Result<Response, ApiError> {
    let (read_model, statement) = bank.statement(id, params.consistency()?).await?;
    // The balance and the lines come from one snapshot of one version of the read model.
    Ok(Json(json!({
        "id": id,
        "balance": statement.account.balance,
        "version": statement.account.version,
        "read_model": read_model,
        "entries": statement.entries,
    }))
    .into_response())
}

async fn transfer(
    State(bank): State<Shared>,
    id: TransferId,
    Params(params): Params<ReadParams>,
) -> Result<Json<TransferView>, ApiError> {
    let (state, version) = bank.transfer(id, params.wait()).await?;
    Ok(Json(TransferView::new(id, &state, version)))
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    /// The transfer.
    pub id: TransferId,
    /// What was asked; absent for a transfer never requested.
    #[serde(flatten)]
    pub request: Option<TransferRequest>,
    /// Where it is: [`TransferState::status`].
    pub status: &'static str,
    /// Why it failed, or why it is being refunded: the refusal's message.
    pub reason: Option<String>,
    /// The stable code of that refusal (`insufficient_funds`, `account_closed`, …; `rejected`
    /// for a message recorded before refusals were typed that names none of them).
    pub reason_code: Option<&'static str>,
    /// Whether the source was debited and then refunded.
    pub compensated: bool,
    /// The revision of the transfer's stream this view has reached.
    pub version: Option<u64>,
}

impl TransferView {
    /// Transfer `id` in `state`, at revision `version` of its stream.
    pub fn new(id: TransferId, state: &TransferState, version: Option<u64>) -> Self {
        let (reason, compensated) = match state {
            TransferState::Refunding { reason, .. } => (Some(reason), false),
            TransferState::Failed {
                reason,
                compensated,
                ..
            } => (Some(reason), *compensated),
            _ => (None, false),
        };
        Self {
            id,
            request: state.request().copied(),
            status: state.status(),
            reason: reason.map(Refusal::to_string),
            reason_code: reason.map(|reason| match reason {
                Refusal::Account(refusal) => refusal_code(refusal).1,
                Refusal::Described(_) => "rejected",
            }),
            compensated,
            version,
        }
    }
}

/// `ok` (200) when the store answers and every projection runs; `degraded` (503) while the
/// store does not answer or a projection recovers from a fault (both come back by
/// themselves); `failed` (503) when a projection stopped on what retrying cannot fix (a poison
/// event): that needs an operator.
async fn health(State(bank): State<Shared>) -> Response {
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

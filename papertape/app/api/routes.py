"""The routes of the API, under /api/v1 (README "HTTP API"): each reads the archive or sends one message, through
the app's Backend."""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from typing import Annotated, Any, AsyncIterator, Callable, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse

import schemas as s
from papertape.app import sessions as session_cli
from papertape.app.api import models as m
from papertape.app.api import reads
from papertape.app.api.backend import Backend, version
from papertape.app.api.events import event_data, of_session
from papertape.app.api.writes import acknowledgement
from schemas.vocabulary import AlertType, Command, DecisionAction, Severity

SESSION = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
SESSION_QUERY = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
LIMIT = Annotated[int, Query(ge=1, le=10_000)]
EVENT_TIME = Annotated[int, Query(ge=0, lt=10**14)]
T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="the API's token (PAPERTAPE_API_TOKEN)")


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


BackendDep = Annotated[Backend, Depends(get_backend)]


def authorized(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """With a token set, every request but /health, /version and the dashboard's page carries it."""
    token: str | None = request.app.state.token
    if token is None:
        return
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})


open_router = APIRouter(prefix="/api/v1", tags=["health"])
router = APIRouter(prefix="/api/v1", dependencies=[Depends(authorized)],
                responses={400: {"description": "a body that is not JSON"},
                           401: {"description": "no or wrong bearer token"},
                           404: {"description": "no such session (or alert, or symbol)"},
                           503: {"description": "no archive or broker to answer from yet"}})

@open_router.get("/health", response_model=m.Health)
def health(backend: BackendDep) -> m.Health:
    where = backend.broker_address()
    return m.Health(version=version(), run_in_progress=backend.run_in_progress(), archive=backend.can_read(),
                    broker=where[0] if where else None)

@open_router.get("/version")
def version_info() -> dict[str, str]:
    return {"version": version(), "api": "v1"}

# --- sessions ------------------------------------------------------------------------------------------
def of_known_session(backend: Backend, session: str, read: Callable[[reads.Query], T]) -> T:
    """read(query) of a session the archive knows (404 otherwise), in one visit to the archive."""
    def checked(query: reads.Query) -> T:
        if not reads.session_known(query, session):
            raise HTTPException(404, f"no session {session!r} in the archive")
        return read(query)

    return backend.read(checked)

@router.get("/sessions", response_model=list[m.SessionSummary], tags=["sessions"])
def list_sessions(backend: BackendDep) -> list[dict[str, Any]]:
    return reads.rows(backend.read(session_cli.list_sessions))

@router.get("/sessions/{session}", response_model=m.SessionDetail, tags=["sessions"],
         responses={404: {"description": "no such session"}})
def show_session(backend: BackendDep, session: SESSION) -> m.SessionDetail:
    status, account = of_known_session(backend, session,
                                       lambda q: (reads.session_status(q, session), reads.portfolio(q, session)))
    st = status or {}
    return m.SessionDetail(session=session, status=st.get("status"), event=st.get("event"),
                           strategy=st.get("strategy"), intel=st.get("intel"),
                           breakers=json.loads(st.get("breakers") or "{}"),
                           config=json.loads(st["config"]) if st.get("config") else None,
                           account=m.Account(**account[0]) if account else None)

# --- accounts, orders, fills, decisions, equity, metrics ----------------------------------------------------
@router.get("/portfolio", response_model=list[m.Account], tags=["accounts"])
def portfolio(backend: BackendDep) -> list[dict[str, Any]]:
    """Every session's latest balance: cash, equity, P&L, fees, funding, open positions."""
    return backend.read(reads.portfolio)

@router.get("/sessions/{session}/positions", response_model=list[m.Position], tags=["accounts"])
def positions(backend: BackendDep, session: SESSION, include_flat: bool = False) -> list[dict[str, Any]]:
    return of_known_session(backend, session, lambda q: reads.positions(q, session, include_flat))

@router.get("/sessions/{session}/orders", response_model=list[m.Order], tags=["orders"])
def orders(backend: BackendDep, session: SESSION, state: Literal["open", "closed", "all"] = "open",
           limit: LIMIT = 500) -> list[dict[str, Any]]:
    return of_known_session(backend, session, lambda q: reads.orders(q, session, state, limit))

@router.get("/sessions/{session}/fills", response_model=list[m.Fill], tags=["orders"])
def fills(backend: BackendDep, session: SESSION, since: EVENT_TIME = 0,
          limit: LIMIT = 1000) -> list[dict[str, Any]]:
    return of_known_session(backend, session, lambda q: reads.fills(q, session, since, limit))

@router.get("/sessions/{session}/decisions", response_model=list[m.Decision], tags=["decisions"])
def decisions(backend: BackendDep, session: SESSION,
              action: DecisionAction | None = None,
              limit: LIMIT = 100) -> list[dict[str, Any]]:
    return of_known_session(backend, session, lambda q: reads.decisions(q, session, action, limit))

@router.get("/sessions/{session}/equity", response_model=list[m.EquityPoint], tags=["accounts"])
def equity(backend: BackendDep, session: SESSION, since: EVENT_TIME = 0,
           points: Annotated[int, Query(ge=2, le=10_000)] = 1000) -> list[dict[str, Any]]:
    return of_known_session(backend, session, lambda q: reads.equity_series(q, session, since, points))

@router.get("/metrics", response_model=list[dict[str, Any]], tags=["metrics"])
def metrics(backend: BackendDep, session: SESSION_QUERY = None
            ) -> list[dict[str, Any]]:
    """The performance metrics (README "Metrics"), per session, symbol ("" = the account) and period."""
    return backend.read(lambda q: reads.metrics(q, session))

# --- prices ------------------------------------------------------------------------------------------------
@router.get("/prices/{symbol}", response_model=m.Price, tags=["prices"],
         responses={404: {"description": "a symbol the run does not know"},
                    503: {"description": "no fresh price: never an invented one"}})
def price(backend: BackendDep, symbol: Annotated[str, PathParam(pattern=r"^[A-Z0-9._-]{1,40}$")],
          max_age_s: Annotated[float, Query(gt=0, le=86_400)] = 60.0) -> m.Price:
    """The latest mark of a symbol or DEX token (as its source priced it: Bybit's mark, CoinGecko's price),
    with its event time. Fresh means within `max_age_s` of the run's newest mark (its event-time clock)."""
    found = backend.read(lambda q: reads.latest_price(q, symbol))
    if found is None:
        if symbol not in backend.known_symbols():
            raise HTTPException(404, f"unknown symbol {symbol!r}")
        raise HTTPException(503, f"no price of {symbol} yet")
    age = int(found["clock"]) - int(found["ts"])
    if age > max_age_s * 1000:
        raise HTTPException(503, f"no fresh price of {symbol}: the last is {age / 1000:.1f} s older than the "
                                 f"run's newest (max_age_s {max_age_s:g})")
    return m.Price(symbol=symbol, mark=found["mark"], bid=found["bid"], ask=found["ask"], last=found["last"],
                   ts=found["ts"], age_ms=age)

# --- alerts -------------------------------------------------------------------------------------------------
@router.get("/alerts", response_model=list[m.Alert], tags=["alerts"])
def alerts(backend: BackendDep,
           severity: Annotated[list[Severity], Query()] = [],  # noqa: B006
           type: Annotated[list[AlertType], Query()] = [],  # noqa: A002, B006
           session: SESSION_QUERY = None,
           acknowledged: bool | None = None, limit: LIMIT = 200) -> list[dict[str, Any]]:
    """Alerts newest first, filtered by severity, type, session and whether acknowledged."""
    return backend.read(lambda q: reads.alerts(q, list(severity), list(type), session, acknowledged, limit))

@router.post("/alerts/{alert_id}/ack", response_model=m.Sent, tags=["alerts"],
          responses={404: {"description": "no such alert"}})
async def acknowledge(backend: BackendDep, alert_id: Annotated[str, PathParam(min_length=1, max_length=300)],
                      ack: Annotated[m.Ack | None, Body()] = None) -> m.Sent:
    if not await asyncio.to_thread(backend.read, lambda q: reads.alert_exists(q, alert_id)):
        raise HTTPException(404, f"no alert {alert_id!r}")
    _, writer = await backend.broker()
    return await writer.send(acknowledgement(alert_id, (ack or m.Ack()).by, _now_ms()))

# --- inputs: orders and signals -------------------------------------------------------------------------
@router.post("/sessions/{session}/orders", response_model=m.Sent, status_code=202, tags=["orders"],
          responses={422: {"description": "an order whose fields do not fit its type"}})
async def submit_order(backend: BackendDep, session: SESSION, order: m.OrderRequest) -> m.Sent:
    """An order into the session: it meets the market at max(its ts, the session's event time) + the session's
    latency; its events and fills follow on the stream and in /orders and /fills."""
    fields = order.model_dump(exclude={"id", "ts"}, exclude_none=True)
    return await _send(backend, lambda ts, mid: s.Order(id=order.id or mid, ts=ts, session=session, **fields), order.ts)

@router.post("/sessions/{session}/signals", response_model=m.Sent, status_code=202, tags=["orders"])
async def submit_signal(backend: BackendDep, session: SESSION, signal: m.SignalRequest) -> m.Sent:
    """A view on a symbol (the exposure to hold); the session sizes it, checks it and logs a decision."""
    fields = signal.model_dump(exclude={"id", "ts"})
    return await _send(backend, lambda ts, mid: s.Signal(id=signal.id or mid, ts=ts, session=session, strategy="api",
                                                **fields), signal.ts)

async def _send(backend: Backend, build: Callable[[int, str], s.Message], ts: int | None) -> m.Sent:
    try:
        msg = build(_now_ms() if ts is None else ts, f"api:{uuid.uuid4().hex}")
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(e["msg"] for e in exc.errors(include_url=False))) from None
    _, writer = await backend.broker()
    return await writer.send(msg)

# --- the live stream -----------------------------------------------------------------------------------
@router.get("/stream", tags=["stream"], response_class=Response,
         responses={200: {"content": {"text/event-stream": {}},
                          "description": "server-sent events: fill, order, equity, decision, alert, session, "
                                         "dead_letter; each `data` is the message as on its topic"}})
async def stream(backend: BackendDep, session: SESSION_QUERY = None, holds: bool = True) -> Any:
    """Live events of one session (or all) from the moment of the request; `holds=false` leaves out the decisions
    to hold (most of them: a strategy states its view every bar). A client too far behind sees its stream end."""
    hub, _ = await backend.broker()
    sub = hub.subscribe(of_session(session, holds))

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "ready", "data": json.dumps({"session": session})}
            while True:
                item = await sub.queue.get()
                if item is None:
                    return
                name, msg = item
                yield {"event": name, "id": msg.id, "data": s.encode(msg).decode()}
        finally:
            hub.unsubscribe(sub)

    return EventSourceResponse(events(), ping=10)


# --- controls ---------------------------------------------------------------------------------------------------
CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": m.ControlAnswer, "description": "sent; no answer from the engine within wait_s"},
    409: {"model": m.ControlAnswer, "description": "the engine refused it (its reason)"},
    422: {"description": "an invalid config"}}
WAIT_S = Annotated[float, Query(ge=0, le=30, description="how long to wait for the engine's answer")]


@router.post("/sessions/{session}/start", response_model=m.ControlAnswer, tags=["sessions"],
             responses=CONTROL_RESPONSES)
async def start(backend: BackendDep, session: SESSION, config: Annotated[dict[str, Any] | None, Body(
        description='a session config (README "Sessions"): strategy, params, intel, balance, symbols, risk...')]
                = None, wait_s: WAIT_S = 10.0) -> Any:
    """Start a session (or resume a paused one); the answer is the engine's status after it."""
    return await control(backend, session, "start", config or {}, wait_s)


@router.post("/sessions/{session}/config", response_model=m.ControlAnswer, tags=["sessions"],
             responses=CONTROL_RESPONSES)
async def reconfigure(backend: BackendDep, session: SESSION,
                      changes: Annotated[dict[str, Any], Body(description="the keys to change")],
                      wait_s: WAIT_S = 10.0) -> Any:
    """Change settings of a running or paused session (only the keys a running session may change)."""
    return await control(backend, session, "config", changes, wait_s)


@router.post("/sessions/{session}/pause", response_model=m.ControlAnswer, tags=["sessions"],
             responses=CONTROL_RESPONSES)
async def pause(backend: BackendDep, session: SESSION, wait_s: WAIT_S = 10.0) -> Any:
    """No new entries; resting orders, stops, take-profits, max hold, funding and liquidation go on."""
    return await control(backend, session, "pause", {}, wait_s)


@router.post("/sessions/{session}/resume", response_model=m.ControlAnswer, tags=["sessions"],
             responses=CONTROL_RESPONSES)
async def resume(backend: BackendDep, session: SESSION, wait_s: WAIT_S = 10.0) -> Any:
    return await control(backend, session, "resume", {}, wait_s)


@router.post("/sessions/{session}/stop", response_model=m.ControlAnswer, tags=["sessions"],
             responses=CONTROL_RESPONSES)
async def stop(backend: BackendDep, session: SESSION, wait_s: WAIT_S = 10.0) -> Any:
    """Cancel the session's orders, close its positions at market, and end it."""
    return await control(backend, session, "stop", {}, wait_s)


async def control(backend: Backend, session: str, command: Command, config: dict[str, Any], wait_s: float) -> Any:
    """Send a control and answer with the engine's status after it, or its reason for refusing it."""
    try:
        if command == "start":
            session_cli.validate_start(session, config, backend.known_symbols())
        elif command == "config":
            session_cli.validate_changes(session, config)
    except session_cli.CliError as exc:
        raise HTTPException(422, str(exc)) from None
    hub, writer = await backend.broker()
    ctrl = s.Control(id=f"api:{uuid.uuid4().hex}", ts=_now_ms(), session=session, command=command,
                     config=config)
    # the engine's answer: the status message naming this control, or the dead letter of this very control (the
    # answer can come before the broker's ack of the send does: listen first)
    answers = hub.subscribe(lambda topic, msg: (topic == "sessions" and getattr(msg, "control", None) == ctrl.id)
                            or (topic == "errors.dlq" and getattr(msg, "topic", None) == "control"
                                and getattr(msg, "key", None) == session))
    try:
        receipt = await writer.send(ctrl)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                item = await asyncio.wait_for(answers.queue.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                item = None
            if item is None:
                return Response(m.ControlAnswer(outcome="sent", control=receipt).model_dump_json(), status_code=202,
                                media_type="application/json")
            event, msg = item
            if event == "session":
                return m.ControlAnswer(outcome="applied", control=receipt, status=event_data(msg))
            if (getattr(msg, "partition", None), getattr(msg, "offset", None)) == (receipt.partition, receipt.offset):
                body = m.ControlAnswer(outcome="refused", control=receipt, reason=getattr(msg, "error", ""))
                return Response(body.model_dump_json(), status_code=409, media_type="application/json")
    finally:
        hub.unsubscribe(answers)


def _now_ms() -> int:
    return int(time.time() * 1000)

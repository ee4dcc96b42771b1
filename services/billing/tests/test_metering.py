"""Metering through the usage consumer's batch handler: exactly-once counting, pricing, the
double-entry ledger, and refusal of invalid records."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from coca_platform.errors import InvalidArgument

# Fixtures come from conftest.py: `billing` (the in-process app; `billing.tenant()` / `with_quota(n)`),
# `handle` (the consumer's batch handler), `envelope(tenant_id, run_id, prompt, completion, **kw)`,
# `to_record(envelope_or_bytes)` (a consumed Kafka record), `record_usage(tenant, run_id, prompt,
# completion, **kw)` (both in one), `db` (a connection in schema coca_billing).
Billing = Any
Handle = Callable[[list[Any]], Awaitable[None]]
RecordUsage = Callable[..., Awaitable[Any]]
MakeEnvelope = Callable[..., Any]
ToRecord = Callable[..., Any]


async def _usage_rows(db: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await db.fetch(  # type: ignore[no-any-return]
        "SELECT event_id, run_id, prompt_tokens, completion_tokens, cost_micros, ledger_transaction_id"
        " FROM usage_records WHERE tenant_id = $1 ORDER BY recorded_at",
        uuid.UUID(tenant_id),
    )


async def test_the_same_record_delivered_again_is_counted_once(
    billing: Billing,
    handle: Handle,
    envelope: MakeEnvelope,
    to_record: ToRecord,
    db: asyncpg.Connection,
) -> None:
    tenant = billing.tenant()
    usage = envelope(tenant.id, str(uuid.uuid4()), 1000, 500)

    await handle([to_record(usage), to_record(usage)])  # twice in one batch
    await handle([to_record(usage)])  # and redelivered later

    rows = await _usage_rows(db, tenant.id)
    entries = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE tenant_id = $1", uuid.UUID(tenant.id)
    )
    balance = await billing.balance(tenant)
    assert [r["event_id"] for r in rows] == [usage.id]
    assert entries == 2
    assert balance["used_tokens"] == 1500


async def test_usage_is_priced_from_the_model_price_table_in_integer_micros(
    billing: Billing, record_usage: RecordUsage, db: asyncpg.Connection
) -> None:
    tenant = billing.tenant()

    await record_usage(tenant, "run-priced", 1234, 567)  # 100 and 200 micros per 1k tokens
    await record_usage(tenant, "run-default", 1000, 1000, model="some-other-model")  # row '*': 500 and 1500

    costs = {r["run_id"]: r["cost_micros"] for r in await _usage_rows(db, tenant.id)}
    # 1234 * 100 / 1000 + 567 * 200 / 1000 = 123.4 + 113.4 = 236.8 -> 237 (half up, once per record)
    assert costs == {"run-priced": 237, "run-default": 2000}
    assert (await billing.balance(tenant))["cost_micros"] == 2237


async def test_two_usage_events_of_one_run_both_count_and_settle_its_reservation(
    billing: Billing, record_usage: RecordUsage, db: asyncpg.Connection
) -> None:
    """Distinct event ids are distinct usage (e.g. two services metering one run); the reservation is
    settled by the first and its settled tokens sum both."""
    tenant = await billing.with_quota(10_000)
    run_id = str(uuid.uuid4())
    assert (await billing.reserve(tenant, 5000, run_id=run_id)).status_code == 201

    await record_usage(tenant, run_id, 100, 50)
    await record_usage(tenant, run_id, 200, 25)

    reservation = await db.fetchrow(
        "SELECT status, settled_tokens FROM reservations WHERE run_id = $1", run_id
    )
    balance = await billing.balance(tenant)
    assert (reservation["status"], reservation["settled_tokens"]) == ("settled", 375)
    assert (balance["used_tokens"], balance["reserved_tokens"]) == (375, 0)
    assert len(await _usage_rows(db, tenant.id)) == 2


async def test_each_usage_record_posts_one_balanced_ledger_transaction(
    billing: Billing, record_usage: RecordUsage, db: asyncpg.Connection
) -> None:
    tenant = billing.tenant()
    await record_usage(tenant, "run-1", 10_000, 2_000)
    await record_usage(tenant, "run-2", 3_000, 7_000)

    rows = await _usage_rows(db, tenant.id)
    entries = await db.fetch(
        "SELECT transaction_id, account, amount_micros FROM ledger_entries WHERE tenant_id = $1",
        uuid.UUID(tenant.id),
    )
    by_transaction: dict[uuid.UUID, dict[str, int]] = {}
    for e in entries:
        by_transaction.setdefault(e["transaction_id"], {})[e["account"]] = e["amount_micros"]
    usage_account = f"tenant:{tenant.id}:usage"
    assert set(by_transaction) == {r["ledger_transaction_id"] for r in rows}
    for row in rows:
        posted = by_transaction[row["ledger_transaction_id"]]
        assert posted == {usage_account: row["cost_micros"], "revenue:usage": -row["cost_micros"]}
    owed = await db.fetchval(
        "SELECT sum(amount_micros) FROM ledger_entries WHERE account = $1", usage_account
    )
    assert owed == sum(r["cost_micros"] for r in rows) == (await billing.balance(tenant))["cost_micros"]


async def test_usage_without_tokens_settles_the_run_and_posts_nothing(
    billing: Billing, record_usage: RecordUsage, db: asyncpg.Connection
) -> None:
    tenant = await billing.with_quota(1000)
    run_id = str(uuid.uuid4())
    await billing.reserve(tenant, 500, run_id=run_id)

    await record_usage(tenant, run_id, 0, 0)

    rows = await _usage_rows(db, tenant.id)
    assert [(r["cost_micros"], r["ledger_transaction_id"]) for r in rows] == [(0, None)]
    assert await db.fetchval("SELECT status FROM reservations WHERE run_id = $1", run_id) == "settled"
    assert (await billing.balance(tenant))["remaining_tokens"] == 1000


_INSERT_ENTRY = """
INSERT INTO ledger_entries (transaction_id, tenant_id, account, amount_micros) VALUES ($1, $2, $3, $4)
"""


async def _post(db: asyncpg.Connection, transaction_id: uuid.UUID, entries: list[tuple[str, int]]) -> None:
    """Insert entries of one ledger transaction in one database transaction."""
    async with db.transaction():
        for account, amount in entries:
            await db.execute(_INSERT_ENTRY, transaction_id, uuid.uuid4(), account, amount)


async def test_the_database_refuses_an_unbalanced_ledger_transaction(db: asyncpg.Connection) -> None:
    transaction_id = uuid.uuid4()

    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        await _post(db, transaction_id, [("tenant:x:usage", 100), ("revenue:usage", -99)])
    await _post(db, transaction_id, [("tenant:x:usage", 100), ("revenue:usage", -100)])  # balanced: fine
    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):  # nor can a later one unbalance it
        await _post(db, transaction_id, [("revenue:usage", -1)])

    total = "SELECT sum(amount_micros), count(*) FROM ledger_entries WHERE transaction_id = $1"
    assert tuple(await db.fetchrow(total, transaction_id)) == (0, 2)


async def test_ledger_entries_cannot_be_changed_or_deleted(db: asyncpg.Connection) -> None:
    transaction_id = uuid.uuid4()
    await _post(db, transaction_id, [("a", 5), ("b", -5)])

    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await db.execute(
            "UPDATE ledger_entries SET amount_micros = 6 WHERE transaction_id = $1",
            transaction_id,
        )
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await db.execute("DELETE FROM ledger_entries WHERE transaction_id = $1", transaction_id)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], bytes]:
    """Breaks one field of an envelope's JSON: ``path`` is ``type`` or ``data.prompt_tokens`` and so on."""

    def corrupt(body: dict[str, Any]) -> bytes:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        target[last] = value
        return orjson.dumps(body)

    return corrupt


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda _: b"\x00not json", id="not JSON"),
        pytest.param(lambda _: b'{"hello": "world"}', id="not an envelope"),
        pytest.param(_set("type", "agent.message.delta"), id="another event type"),
        pytest.param(_set("data.prompt_tokens", -1), id="negative tokens"),
        pytest.param(_set("data.completion_tokens", "12"), id="tokens as text"),
        pytest.param(_set("data.tenant_id", "acme"), id="tenant not a uuid"),
        pytest.param(_set("data.tenant_id", str(uuid.uuid4())), id="tenant differs from the envelope's"),
        pytest.param(_set("data.run_id", None), id="no run id"),
        pytest.param(_set("data.model", ""), id="empty model"),
        pytest.param(_set("time", "yesterday"), id="time not a timestamp"),
    ],
)
async def test_an_invalid_record_is_refused_as_not_retryable_and_records_nothing(
    corrupt: Callable[[dict[str, Any]], bytes],
    billing: Billing,
    handle: Handle,
    envelope: MakeEnvelope,
    to_record: ToRecord,
    db: asyncpg.Connection,
) -> None:
    tenant = billing.tenant()
    good = envelope(tenant.id, "run-good", 10, 10)
    bad = corrupt(orjson.loads(envelope(tenant.id, "run-bad", 10, 10).to_json()))

    with pytest.raises(InvalidArgument) as raised:
        await handle([to_record(good), to_record(bad)])

    assert raised.value.code == "invalid_usage_record"
    assert not raised.value.retryable
    assert await _usage_rows(db, tenant.id) == []  # the valid one waits: the platform retries it alone

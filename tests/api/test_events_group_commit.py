"""CreateSyncEvents under group commit, in process: concurrent signed calls for several tasks
share a transaction, an unknown task fails only its own call (404), and no call is answered 200
before its keys are committed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from omsync.api.signing import ALGORITHM, DATE_FORMAT, canonical_request, compute_signature, string_to_sign
from omsync.app import create_app
from omsync.config import Settings
from omsync.services import Services
from tests.api.conftest import PROJECT
from tests.ledger.test_ledger import CREDS, FIELDS

SIGNED = ("content-type", "host", "x-sdk-date")


@pytest.fixture()
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    opened = await Services.open(Settings(data_dir=tmp_path))
    yield opened
    await opened.close()


def signed_post(ak: str, sk: str, path: str, keys: list[str]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"object_keys": keys}).encode()
    date = datetime.now(UTC).strftime(DATE_FORMAT)
    headers = {"Content-Type": "application/json;charset=UTF-8", "Host": "testserver", "X-Sdk-Date": date}
    canonical = canonical_request("POST", path.encode(), b"", headers, SIGNED, body)
    signature = compute_signature(sk, string_to_sign(canonical, date))
    headers["Authorization"] = f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(SIGNED)}, Signature={signature}"
    return body, headers


async def test_concurrent_events_are_answered_after_one_shared_commit(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ak, sk = await services.keys.create_key(PROJECT)
    tasks = [await services.tasks.create(PROJECT, FIELDS, CREDS) for _ in range(3)]
    app = create_app(Settings(data_dir=tmp_path), services)

    opened = asyncio.Event()
    transactions: list[int] = []
    committed: list[int] = []
    original = services.db.run_write

    async def gated(fn: Callable[[Any], Any]) -> Any:
        transactions.append(1)
        await opened.wait()
        result = await original(fn)
        committed.append(1)
        return result

    monkeypatch.setattr(services.db, "run_write", gated)
    targets = [*tasks, "unknown-task", *tasks]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:

        async def post(n: int, task_id: str) -> httpx.Response:
            path = f"/v2/{PROJECT}/sync-tasks/{task_id}/events"
            body, headers = signed_post(ak, sk, path, [f"dir%2Fkey-{n}", "same"])
            return await http.post(path, content=body, headers=headers)

        waiting = [asyncio.ensure_future(post(n, t)) for n, t in enumerate(targets)]
        for _ in range(300):
            if transactions:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waiting)  # nothing is answered before the commit
        async with services.db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT count(*) FROM ledger")).scalar() == 0
        opened.set()
        answers = await asyncio.gather(*waiting)

    assert [a.status_code for a in answers] == [200, 200, 200, 404, 200, 200, 200]
    refused = answers[3].json()
    assert (refused["error_code"], refused["error_msg"]) == ("OMS.1009", "sync task unknown-task not found")
    assert len(committed) == len(transactions) < len(targets)
    for task_id in tasks:
        totals = await services.ledger.totals(task_id)
        assert totals["request"] == 4
        assert await services.ledger.pending_occurrences(task_id) == 4

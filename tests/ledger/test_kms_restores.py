"""Data keys and restore waits on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from omsync import kms
from omsync.domain.model import CdnAuthentication, Outcome, OutcomeKind
from omsync.ledger.kms_keys import AliasTaken, DataKeys
from omsync.ledger.restores import Restores
from omsync.services import Services
from tests.ledger.test_ledger import CREDS, FIELDS, PROJECT, new_task


async def test_data_keys_are_per_project_versioned_and_open_a_task(services: Services) -> None:
    keys = DataKeys(services.db, services.box)
    created = await keys.create(PROJECT, "prod")
    with pytest.raises(AliasTaken):
        await keys.create(PROJECT, "prod")
    await keys.create("other-project", "prod")
    assert [k.key_id for k in await keys.list(PROJECT)] == [created.key_id]
    with pytest.raises(kms.UnknownDataKey):
        await keys.load(created.key_id, "other-project")
    first = kms.encrypt(await keys.load(created.key_id, PROJECT), "SK-1")
    assert (await keys.rotate(created.key_id)).current_version == 2
    loaded = await keys.load(created.key_id, PROJECT)
    second = kms.encrypt(loaded, "CDN-KEY")
    assert sorted(loaded.versions) == [1, 2] and second.startswith("okms1:2:")

    # A task storing ciphertexts: spec() gives the engine the plaintexts.
    task_id = await services.tasks.create(
        PROJECT, {**FIELDS, "source_cdn": '{"authentication_type":"ALIYUN_OSS_A","domain":"cdn.test","protocol":"https"}'},
        {**CREDS, "src_sk": first, "src_sk_kms_key_id": created.key_id, "cdn_key": second,
         "cdn_key_kms_key_id": created.key_id})
    spec = await services.tasks.spec(task_id)
    assert spec.src.secret_key == "SK-1" and spec.dst.secret_key == CREDS["dst_sk"]
    assert spec.source_cdn is not None and spec.source_cdn.authentication_key == "CDN-KEY"
    assert spec.source_cdn.authentication_type is CdnAuthentication.ALIYUN_OSS_A
    assert "CDN-KEY" not in repr(spec.source_cdn)
    stored = await services.tasks.credentials(PROJECT, task_id)
    assert stored["src_sk"] == first and stored["cdn_key"] == second  # ciphertexts at rest


async def test_a_restore_wait_counts_no_attempt_and_stays_in_the_database(services: Services) -> None:
    task_id = await new_task(services)
    restores = Restores(services.db)
    await services.ledger.accept(task_id, ["cold/ä b"])
    [claim] = await services.ledger.claim("w1", 10, 30)
    assert await restores.defer("w1", claim.row_id, task_id, claim.key, 0.05, "restore requested", checks=0)
    assert not await restores.defer("w1", claim.row_id, task_id, claim.key, 0.05, "again", checks=1)  # lease gone
    state = await restores.state(task_id, "cold/ä b")
    assert state is not None and state.checks == 0
    assert await services.ledger.claim("w2", 10, 30) == []  # not due yet
    await asyncio.sleep(0.1)
    [again] = await services.ledger.claim("w2", 10, 30)
    assert again.attempts == claim.attempts == 0  # the wait was no attempt
    assert await restores.defer("w2", again.row_id, task_id, again.key, 0.01, "under way", checks=1)
    state = await restores.state(task_id, "cold/ä b")
    assert state is not None and state.checks == 1
    await asyncio.sleep(0.05)
    [last] = await services.ledger.claim("w3", 10, 30)
    assert last.attempts == 0
    result = await services.ledger.finish("w3", last, Outcome(OutcomeKind.SUCCESS, size=1))
    assert result.recorded and result.final
    totals = await services.ledger.totals(task_id)
    assert (totals["request"], totals["success"], totals["failure"]) == (1, 1, 0)

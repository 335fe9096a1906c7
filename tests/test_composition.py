"""The composition root (``omsync.composition``): what it builds from Settings and how the
parts are wired; the server-side decision of the store factory it picks; the process gauges
that replace the metrics' module state."""

from __future__ import annotations

from pathlib import Path

from omsync import metrics
from omsync.composition import build_engine, open_services, store_factory, worker_parts
from omsync.config import Settings
from omsync.domain.model import CloudType, Credentials
from omsync.stores.memory import MemoryStore
from tests.engine.helpers import FixedStores, make_spec


async def test_engine_gets_its_parts_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, workers=3, lease_seconds=42, poll_interval_seconds=0.5,
                        max_attempts=7, part_concurrency=2, object_list_interval_seconds=99)
    services = await open_services(settings)
    try:
        engine = build_engine(settings, services, FixedStores(MemoryStore(), MemoryStore()), owner="w-1")
        assert (engine.config.workers, engine.config.lease_seconds, engine.config.poll_interval_seconds,
                engine.config.object_list_interval_seconds) == (3, 42, 0.5, 99)
        assert engine.retry.max_attempts == 7
        assert engine.copier.limits.part_concurrency == 2
        assert engine.owner == "w-1" and engine.restorer.owner == "w-1"
        assert engine.gauges is services.gauges
        assert engine.ledger is services.ledger and engine.tasks is services.tasks
        parts = worker_parts(services)
        try:
            # One lease owner and one store factory for every loop of a worker process.
            assert parts.deletes.owner == parts.engine.owner
            assert parts.migrations.stores is parts.factory and parts.engine.stores is parts.factory
        finally:
            await parts.factory.close()
    finally:
        await services.close()


async def test_server_side_is_decided_by_endpoint_and_credentials(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"
    settings = Settings(data_dir=tmp_path, endpoints={"S3:*": url, "Aliyun:cn-x": url, "AWS:other": "http://127.0.0.1:10"})
    factory = store_factory(settings)
    same = Credentials("ak", "sk")
    try:
        # Two cloud-type names for one endpoint URL, same credentials: one server, server-side.
        spec = make_spec(src_cloud_type=CloudType.ALIYUN, src_region="cn-x", src=same,
                         dst_cloud_type=CloudType.S3, dst_region="r", dst=same)
        assert factory.server_side(spec)
        # Other credentials, or another endpoint: streamed.
        assert not factory.server_side(make_spec(src=same, dst=Credentials("ak", "other-sk")))
        assert not factory.server_side(make_spec(src_cloud_type=CloudType.AWS, src_region="other", src=same,
                                                 dst=same))
    finally:
        await factory.close()
    off = store_factory(Settings(data_dir=tmp_path, endpoints={"S3:*": url}, server_side_copy=False))
    try:
        assert not off.server_side(make_spec(src=same, dst=same))
    finally:
        await off.close()


class _Slots:
    def __init__(self, slots: int, inflight: dict[str, int]) -> None:
        self.usage = (slots, inflight)

    def slot_usage(self) -> tuple[int, dict[str, int]]:
        return self.usage


async def test_process_gauges_report_their_engines_and_pending_counts() -> None:
    gauges, other = metrics.ProcessGauges(), metrics.ProcessGauges()
    engine = _Slots(4, {"t1": 3})
    gauges.track(engine)

    async def counts() -> dict[str, int]:
        return {"t1": 12, "t2": 0}

    assert await gauges.refresh_pending(counts)
    text = gauges.render().decode()
    assert "omsync_worker_slots 4.0" in text and "omsync_worker_slots_busy 3.0" in text
    assert 'omsync_task_keys_pending{task_id="t1"} 12.0' in text
    assert 'omsync_task_keys_inflight{task_id="t1"} 3.0' in text
    # Another process's gauges (another Services) see nothing of these.
    assert "omsync_worker_slots 0.0" in other.render().decode()

    async def broken() -> dict[str, int]:
        raise OSError("database gone")

    assert not await gauges.refresh_pending(broken)  # the previous values stay
    assert 'omsync_task_keys_pending{task_id="t1"} 12.0' in gauges.render().decode()
    gauges.forget("t1")
    gauges.untrack(engine)
    text = gauges.render().decode()
    assert 'task_id="t1"' not in text and "omsync_worker_slots 0.0" in text

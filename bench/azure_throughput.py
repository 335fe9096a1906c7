"""Copy throughput from Azure Blob Storage (Azurite) into SeaweedFS: omsync beside rclone's
``azureblob`` backend, on the same blobs, in the same run.

    python bench/azure_throughput.py [--small 1000] [--large 4] [--large-mib 32] [--workers 32]

One Azurite (blob service, in memory) and one SeaweedFS are started here. The source blobs
(``--small`` × 4 KiB and ``--large`` × ``--large-mib`` MiB) are uploaded once into one container;
then, per size class:

- rclone: ``rclone copy az:<container> sw:<bucket> --transfers W`` with the ``azureblob``
  remote configured by ``RCLONE_CONFIG_AZ_*`` variables (account, key, the emulator's endpoint)
  and the SeaweedFS remote by ``RCLONE_CONFIG_SW_*``; timed from process start to exit.
- omsync: a fresh ``omsync serve`` (SQLite ledger, ``--workers W`` copies at once) with a task
  ``src_cloud_type="Azure"`` (``Azure:*`` → Azurite ``#azurite``) into ``HuaweiCloud`` (→
  SeaweedFS); every key is posted as a sync event; timed from the first event to the last
  outcome. Metadata migration on, as rclone copies metadata by default.

Every object must then be in the destination with its size. Azurite is a Node.js process
that shares the machine's CPUs with everything else: the figures compare the two tools on the
same emulator, they say nothing about Azure's own throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from huaweicloudsdkoms.v2 import CreateSyncTaskReq, CreateSyncTaskRequest

from common import (
    MB,
    MIB,
    S3Server,
    bucket_contents,
    load,
    machine,
    omsync_api,
    rclone_binary,
    rclone_env,
    run_rclone_command,
    seaweedfs,
    shown_command,
    table,
    wait_settled,
)

if TYPE_CHECKING:
    from tests.servers_azurite import AzuriteServer

SMALL_BYTES = 4096


@dataclass
class Result:
    tool: str
    kind: str
    objects: int
    total_bytes: int
    seconds: float
    peak_rss_kib: int
    command: str = ""

    def row(self) -> list[object]:
        return [self.tool, self.kind, self.objects, f"{self.total_bytes / MIB:.1f}", f"{self.seconds:.2f}",
                f"{self.objects / self.seconds:.0f}", f"{self.total_bytes / MB / self.seconds:.1f}",
                f"{self.peak_rss_kib / 1024:.0f}"]


def upload_blobs(azurite: AzuriteServer, container: str, keys: list[str], size: int, threads: int = 16) -> None:
    from azure.storage.blob import BlobServiceClient

    filler = os.urandom(size)
    credential = {"account_name": azurite.account, "account_key": azurite.key}
    with BlobServiceClient(azurite.account_url, credential=credential) as service:
        def put(key: str) -> None:
            body = key.encode().ljust(64, b"\0")[:64] + filler[64:] if size >= 64 else filler
            service.get_blob_client(container, key).upload_blob(body, overwrite=True, max_concurrency=4)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, keys))


def run_rclone(azurite: AzuriteServer, weed: S3Server, container: str, bucket: str, prefix: str,
               sizes: dict[str, int], transfers: int, timeout: float) -> Result:
    env = rclone_env(weed, "sw")
    env.update({"RCLONE_CONFIG_AZ_TYPE": "azureblob", "RCLONE_CONFIG_AZ_ACCOUNT": azurite.account,
                "RCLONE_CONFIG_AZ_KEY": azurite.key, "RCLONE_CONFIG_AZ_ENDPOINT": azurite.account_url,
                # rclone would carry the Azure access tier ("Hot") over as the S3 storage class,
                # which SeaweedFS refuses.
                "RCLONE_CONFIG_SW_STORAGE_CLASS": "STANDARD"})
    argv = [rclone_binary(), "copy", f"az:{container}/{prefix}", f"sw:{bucket}/{prefix}", "--transfers",
            str(transfers), "--s3-no-check-bucket", "--stats", "0"]
    run = run_rclone_command(argv, env, timeout)
    check(weed, bucket, prefix, sizes)
    return Result("rclone", prefix.rstrip("/"), len(sizes), sum(sizes.values()), run.seconds, run.peak_rss_kib,
                  shown_command(argv))


def run_omsync(azurite: AzuriteServer, weed: S3Server, container: str, bucket: str, prefix: str,
               sizes: dict[str, int], workers: int, timeout: float) -> Result:
    endpoints = {"Azure:*": azurite.account_url + "#azurite",
                 "HuaweiCloud:cn-north-4": weed.endpoint_url + "#seaweedfs"}
    with omsync_api(workers=workers, endpoints=endpoints) as om:
        body = CreateSyncTaskReq(
            src_cloud_type="Azure", src_region="eastus", src_bucket=container, src_ak=azurite.account,
            src_sk=azurite.key, dst_ak=weed.access_key, dst_sk=weed.secret_key, dst_region="cn-north-4",
            dst_bucket=bucket, enable_metadata_migration=True)
        task_id = str(om.client().create_sync_task(CreateSyncTaskRequest(body=body)).sync_task_id)
        keys = sorted(sizes)
        start = time.monotonic()
        om.post_all(task_id, keys)
        counters = wait_settled(om, task_id, len(keys), timeout)
        seconds = time.monotonic() - start
        if counters[1] != len(keys):
            raise RuntimeError(f"omsync: {counters} (requests, success, failure, skip)\n{om.server.log()[-3000:]}")
        peak = om.stop()
    check(weed, bucket, prefix, sizes)
    return Result("omsync", prefix.rstrip("/"), len(keys), sum(sizes.values()), seconds, peak)


def check(weed: S3Server, bucket: str, prefix: str, sizes: dict[str, int]) -> None:
    found = bucket_contents(weed, bucket, prefix)
    missing = {k: v for k, v in sizes.items() if found.get(k) != v}
    if missing:
        raise RuntimeError(f"{len(missing)} objects missing or with the wrong size in {bucket}, e.g. "
                           f"{next(iter(missing))!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="4 KiB blobs")
    parser.add_argument("--large", type=int, default=4, help="large blobs")
    parser.add_argument("--large-mib", type=int, default=32, help="size of a large blob in MiB")
    parser.add_argument("--workers", type=int, default=32, help="omsync copies at once / rclone --transfers")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    from tests.servers_azurite import start_azurite  # the repository root is on sys.path now

    azurite = start_azurite()
    try:
        with seaweedfs() as weed:
            container = azurite.make_container("bench-src")
            classes = {"small/": (args.small, SMALL_BYTES), "large/": (args.large, args.large_mib * MIB)}
            sources: dict[str, dict[str, int]] = {}
            for prefix, (count, size) in classes.items():
                if count <= 0:
                    continue
                keys = [f"{prefix}{i:06d}-obj" for i in range(count)]
                upload_blobs(azurite, container, keys, size)
                sources[prefix] = dict.fromkeys(keys, size)
            results: list[Result] = []
            for index, (prefix, sizes) in enumerate(sources.items()):
                results.append(run_rclone(azurite, weed, container, weed.make_bucket(f"rc-{index}"), prefix, sizes,
                                          args.workers, args.timeout))
                results.append(run_omsync(azurite, weed, container, weed.make_bucket(f"om-{index}"), prefix, sizes,
                                          args.workers, args.timeout))
    finally:
        azurite.stop()

    print(f"# Azurite → SeaweedFS, {machine()}")
    print(f"workers / --transfers: {args.workers}; {load()} at the end")
    print(table(["tool", "class", "objects", "MiB", "seconds", "objects/s", "MB/s", "peak RSS MiB"],
                [r.row() for r in results]))
    for result in results:
        if result.command:
            print(f"rclone command ({result.kind}): {result.command}")


if __name__ == "__main__":
    main()

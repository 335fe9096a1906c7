"""Client CPU per S3 request: omsync's ``S3Store`` (awscrt) against boto3, on SeaweedFS.

Starts a SeaweedFS ``weed mini`` on free ports, writes ``--objects`` objects of ``--size`` bytes,
then runs the same requests (HEAD, GET, PUT, CopyObject, ListObjectsV2 pages) through each client
with ``--inflight`` requests in flight, and prints, per request kind and client, the requests per
second seen and the CPU this process spent per request (``time.process_time``: every thread of the
process, the CRT's native event-loop threads included). The server's CPU per request is read from
``/proc/<pid>/stat`` of the SeaweedFS processes.

    .venv/bin/python bench/s3_client_cost.py [--objects 2000] [--size 4096] [--inflight 32]
                                             [--loop-threads 1] [--skip-boto3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import S3Server, start_seaweedfs  # noqa: E402

from omsync.domain.model import Credentials  # noqa: E402
from omsync.stores import PutOptions  # noqa: E402
from omsync.stores import s3 as s3_module  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(server: S3Server) -> float:
    """CPU seconds of the server's process group so far."""
    total = 0.0
    pgid = os.getpgid(server.process.pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the command name
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Meter:
    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.rows: list[tuple[str, str, int, float, float, float]] = []

    def measure(self, what: str, client: str, count: int, run: Callable[[], None]) -> None:
        server_before = server_cpu(self.server)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        run()
        cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
        server = server_cpu(self.server) - server_before
        self.rows.append((what, client, count, count / wall, cpu / count * 1000, server / count * 1000))

    def print(self) -> None:
        print(f"{'request':<22} {'client':<14} {'count':>6} {'req/s':>8} {'client ms/req':>14} {'server ms/req':>14}")
        for what, client, count, rate, cpu, server in self.rows:
            print(f"{what:<22} {client:<14} {count:>6} {rate:>8.0f} {cpu:>14.3f} {server:>14.3f}")


async def bounded(inflight: int, calls: Iterable[Callable[[], Awaitable[Any]]]) -> None:
    gate = asyncio.Semaphore(inflight)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


def crt_runs(meter: Meter, server: S3Server, bucket: str, other: str, keys: list[str], size: int,
             inflight: int) -> None:
    store = s3_module.S3Store(server.endpoint_url, Credentials(server.access_key, server.secret_key),
                              region=server.region, max_pool_connections=inflight)
    body = os.urandom(size)
    loop = asyncio.new_event_loop()

    async def drain(key: str) -> None:
        async for _ in store.get(bucket, key):
            pass

    async def list_pages() -> None:
        token = None
        while True:
            page = await store.list(bucket, "k/", token, 1000)
            token = page.next_token
            if token is None:
                return

    def run(calls: Iterable[Callable[[], Awaitable[Any]]]) -> Callable[[], None]:
        return lambda: loop.run_until_complete(bounded(inflight, calls))

    try:
        loop.run_until_complete(store.head(bucket, keys[0]))  # client and connections up
        meter.measure("PUT", "awscrt", len(keys),
                      run(lambda k=k: store.put(bucket, k, body, PutOptions()) for k in keys))
        meter.measure("HEAD", "awscrt", len(keys), run(lambda k=k: store.head(bucket, k) for k in keys))
        meter.measure("GET", "awscrt", len(keys), run(lambda k=k: drain(k) for k in keys))
        meter.measure("CopyObject", "awscrt", len(keys),
                      run(lambda k=k: store.server_copy(bucket, k, other, k, PutOptions(copy_metadata=True))
                          for k in keys))
        pages = max(1, len(keys) // 1000)
        meter.measure(f"ListObjectsV2 x{pages}", "awscrt", pages, run([list_pages]))
    finally:
        loop.run_until_complete(store.close())
        loop.close()


def boto3_runs(meter: Meter, server: S3Server, bucket: str, other: str, keys: list[str], size: int,
               inflight: int) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=inflight,
                      retries={"total_max_attempts": 1}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))
    body = os.urandom(size)
    pool = ThreadPoolExecutor(inflight)

    def run(call: Callable[[str], Any]) -> Callable[[], None]:
        return lambda: list(pool.map(call, keys))

    def list_pages() -> None:
        paginator = client.get_paginator("list_objects_v2")
        for _ in paginator.paginate(Bucket=bucket, Prefix="k/", EncodingType="url"):
            pass

    client.head_object(Bucket=bucket, Key=keys[0])
    meter.measure("PUT", "boto3", len(keys), run(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body)))
    meter.measure("HEAD", "boto3", len(keys), run(lambda k: client.head_object(Bucket=bucket, Key=k)))
    meter.measure("GET", "boto3", len(keys),
                  run(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read()))
    meter.measure("CopyObject", "boto3", len(keys), run(lambda k: client.copy_object(
        Bucket=other, Key=k, CopySource={"Bucket": bucket, "Key": k}, MetadataDirective="COPY")))
    pages = max(1, len(keys) // 1000)
    meter.measure(f"ListObjectsV2 x{pages}", "boto3", pages, list_pages)
    pool.shutdown()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--loop-threads", type=int, default=s3_module.EVENT_LOOP_THREADS,
                        help="native event-loop threads of the CRT clients")
    parser.add_argument("--skip-boto3", action="store_true")
    args = parser.parse_args()
    s3_module.EVENT_LOOP_THREADS = args.loop_threads

    server = start_seaweedfs()
    try:
        bucket = server.make_bucket("cost-src")
        other = server.make_bucket("cost-dst")
        keys = [f"k/{index:06d}" for index in range(args.objects)]
        server.client().put_object(Bucket=bucket, Key=keys[0], Body=b"x")
        meter = Meter(server)
        crt_runs(meter, server, bucket, other, keys, args.size, args.inflight)
        if not args.skip_boto3:
            boto3_runs(meter, server, bucket, other, keys, args.size, args.inflight)
        print(f"SeaweedFS, {args.objects} objects of {args.size} bytes, {args.inflight} in flight, "
              f"{args.loop_threads} CRT event-loop thread(s), {os.cpu_count()} cores")
        meter.print()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

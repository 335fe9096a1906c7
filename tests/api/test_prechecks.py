"""The OMS pre-check operations through the official SDK against a real ``omsync serve`` and
real S3 servers (moto, SeaweedFS): bucket list, object pages, prefix check, bucket region,
cloud types and regions, and the 400s that name what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkoms.v2 import (
    CheckPrefixReq,
    CheckPrefixRequest,
    ListBucketsReq,
    ShowBucketListRequest,
    ShowBucketObjectsRequest,
    ShowBucketRegionReq,
    ShowBucketRegionRequest,
    ShowBucketReq,
    ShowCloudTypeRequest,
    ShowRegionInfoRequest,
)

from tests.api.conftest import OTHER_PROJECT, PROJECT
from tests.omsync_server import OmsyncServer, sdk_client
from tests.rawhttp import signed_request
from tests.servers import S3Server


@pytest.fixture(scope="module")
def checker(moto_s3: S3Server, seaweed_s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmsyncServer]:
    endpoints = {
        "Aliyun:moto-region": moto_s3.endpoint_url + "#moto",
        "HuaweiCloud:weed-region": seaweed_s3.endpoint_url + "#seaweedfs",
        "Tencent:ap-guangzhou": "http://127.0.0.1:9",  # nothing listens there
    }
    server = OmsyncServer(data_dir=tmp_path_factory.mktemp("prechecks") / "data",
                          env={"OMSYNC_ENDPOINTS": json.dumps(endpoints),
                               "OMSYNC_CHECK_BUCKETS_TIMEOUT_SECONDS": "3"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(checker: OmsyncServer) -> dict[str, Any]:
    return checker.create_key(PROJECT)


@pytest.fixture(scope="module")
def oms(checker: OmsyncServer, key: dict[str, Any]) -> Any:
    return sdk_client(checker.url, key["access_key"], key["secret_key"], PROJECT)


def refused(call: Callable[[], Any], field: str) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as info:
        call()
    assert info.value.status_code == 400, (info.value.status_code, info.value.error_msg)
    assert info.value.error_code == "OMS.0064"
    assert f"[{field}]" in info.value.error_msg, info.value.error_msg
    return info.value


def moto_req(moto_s3: S3Server, model: Any, **fields: Any) -> Any:
    return model(cloud_type="Aliyun", ak=moto_s3.access_key, sk=moto_s3.secret_key, **fields)


def test_bucket_list_names_the_owned_buckets(oms: Any, moto_s3: S3Server) -> None:
    moto_s3.make_bucket("pre-list-a")
    moto_s3.make_bucket("pre-list-b")
    answer = oms.show_bucket_list(ShowBucketListRequest(body=moto_req(moto_s3, ListBucketsReq)))
    assert {"pre-list-a", "pre-list-b"} <= set(answer.body)


def test_bucket_list_with_refused_keys_is_a_400_naming_ak(oms: Any, seaweed_s3: S3Server) -> None:
    body = ListBucketsReq(cloud_type="HuaweiCloud", ak=seaweed_s3.access_key, sk="not-the-secret")
    error = refused(lambda: oms.show_bucket_list(ShowBucketListRequest(body=body)), "ak")
    assert "access denied" in error.error_msg


def test_bucket_objects_page_through_every_key_byte_exact(oms: Any, moto_s3: S3Server) -> None:
    bucket = moto_s3.make_bucket("pre-objects")
    client = moto_s3.client()
    keys = [f"dir/{name}" for name in ("a b", "a+b", "100%", "中文", "x\ty", "z")]
    for index, name in enumerate(keys):
        client.put_object(Bucket=bucket, Key=name, Body=b"x" * index)
    client.put_object(Bucket=bucket, Key="elsewhere", Body=b"!")
    seen: list[tuple[str, str]] = []
    marker: str | None = None
    pages = 0
    while True:
        body = moto_req(moto_s3, ShowBucketReq, bucket_name=bucket, file_path="dir/", data_center="moto-region",
                        page_size=4, behind_filename=marker)
        page = oms.show_bucket_objects(ShowBucketObjectsRequest(body=body))
        pages += 1
        seen += [(r.name, r.size) for r in page.records]
        if not page.next_page:
            assert page.next_marker is None
            break
        assert page.next_marker == page.records[-1].name
        marker = page.next_marker
    assert pages == 2
    assert seen == sorted((name, str(index)) for index, name in enumerate(keys))


def test_bucket_objects_refusals(oms: Any, moto_s3: S3Server) -> None:
    bad_size = moto_req(moto_s3, ShowBucketReq, bucket_name="pre-objects", data_center="moto-region", page_size=0)
    refused(lambda: oms.show_bucket_objects(ShowBucketObjectsRequest(body=bad_size)), "page_size")
    missing = moto_req(moto_s3, ShowBucketReq, bucket_name="no-such-bucket-pre", data_center="moto-region")
    error = refused(lambda: oms.show_bucket_objects(ShowBucketObjectsRequest(body=missing)), "bucket_name")
    assert "bucket not found" in error.error_msg
    unknown_region = moto_req(moto_s3, ShowBucketReq, bucket_name="pre-objects", data_center="mars-1")
    refused(lambda: oms.show_bucket_objects(ShowBucketObjectsRequest(body=unknown_region)), "data_center")


def test_check_prefix_says_whether_any_key_starts_with_it(oms: Any, moto_s3: S3Server) -> None:
    bucket = moto_s3.make_bucket("pre-prefix")
    moto_s3.client().put_object(Bucket=bucket, Key="logs/2024/a+b 1.txt", Body=b"1")

    def exist(prefix: str) -> bool:
        body = moto_req(moto_s3, CheckPrefixReq, bucket_name=bucket, file_name=prefix, data_center="moto-region")
        return bool(oms.check_prefix(CheckPrefixRequest(body=body)).exist)

    assert exist("logs/") and exist("logs/2024/a+b") and exist("")
    assert not exist("logs/2023/") and not exist("logs/2024/a b")


def test_check_prefix_unreachable_endpoint_and_missing_bucket(oms: Any, moto_s3: S3Server) -> None:
    body = CheckPrefixReq(cloud_type="Tencent", ak="x", sk="y", bucket_name="b-1250000000", file_name="a",
                          data_center="ap-guangzhou")
    error = refused(lambda: oms.check_prefix(CheckPrefixRequest(body=body)), "bucket_name")
    assert "endpoint unreachable" in error.error_msg
    missing = moto_req(moto_s3, CheckPrefixReq, bucket_name="no-such-bucket-pre", file_name="a")
    refused(lambda: oms.check_prefix(CheckPrefixRequest(body=missing)), "bucket_name")
    token = moto_req(moto_s3, CheckPrefixReq, bucket_name="pre-prefix", file_name="a", security_token="t")
    refused(lambda: oms.check_prefix(CheckPrefixRequest(body=token)), "security_token")


def test_bucket_region_is_the_region_where_the_bucket_answers(oms: Any, moto_s3: S3Server,
                                                              seaweed_s3: S3Server) -> None:
    moto_s3.make_bucket("pre-region")
    answer = oms.show_bucket_region(ShowBucketRegionRequest(
        body=moto_req(moto_s3, ShowBucketRegionReq, bucket_name="pre-region")))
    assert (answer.id, answer.name, answer.support) == ("moto-region", "moto-region", True)
    weed = seaweed_s3.make_bucket("pre-region-weed")
    answer = oms.show_bucket_region(ShowBucketRegionRequest(body=ShowBucketRegionReq(
        cloud_type="HuaweiCloud", ak=seaweed_s3.access_key, sk=seaweed_s3.secret_key, bucket_name=weed)))
    assert answer.id == "weed-region"
    missing = moto_req(moto_s3, ShowBucketRegionReq, bucket_name="no-such-bucket-pre")
    refused(lambda: oms.show_bucket_region(ShowBucketRegionRequest(body=missing)), "bucket_name")


def test_cloud_types_and_regions_come_from_the_profiles(oms: Any) -> None:
    sources = oms.show_cloud_type(ShowCloudTypeRequest(type="src")).body
    destinations = oms.show_cloud_type(ShowCloudTypeRequest(type="dst")).body
    for cloud in ("AWS", "Aliyun", "Tencent", "HuaweiCloud", "Azure", "S3"):
        assert cloud in sources and cloud in destinations
    [info] = oms.show_region_info(ShowRegionInfoRequest()).body
    assert info.service_name == "omsync"
    pairs = {(r.cloud_type, r.value) for r in info.region_list}
    assert ("Aliyun", "moto-region") in pairs  # an endpoint override
    assert ("AWS", "us-east-1") in pairs  # a profile region
    assert all(r.description for r in info.region_list)


def test_malformed_bodies_and_other_projects(checker: OmsyncServer, key: dict[str, Any]) -> None:
    def post(path: str, body: bytes, project: str = PROJECT) -> Any:
        return signed_request(checker.url, "POST", f"/v2/{project}/objectstorage/{path}",
                              ak=key["access_key"], sk=key["secret_key"], project_id=project, body=body)

    for body, field in ((b"{}", "cloud_type"), (b'{"cloud_type": "Nowhere"}', "cloud_type"),
                        (b'{"cloud_type": "Aliyun", "ak": "a"}', "sk"), (b"[1]", "")):
        response = post("buckets", body)
        assert response.status_code == 400, response.text
        assert response.json()["error_code"] == "OMS.0064"
        assert field in response.json()["error_msg"]
    response = post("buckets/prefix", b'{"cloud_type": "Aliyun", "ak": "a", "sk": "b", "bucket_name": "x"}')
    assert response.status_code == 400 and "file_name" in response.json()["error_msg"]
    response = signed_request(checker.url, "GET", f"/v2/{PROJECT}/objectstorage/cloud-type",
                              query=[("type", "middle")], ak=key["access_key"], sk=key["secret_key"], project_id=PROJECT)
    assert response.status_code == 400 and "type" in response.json()["error_msg"]
    other = post("buckets", b'{"cloud_type": "Aliyun", "ak": "a", "sk": "b"}', project=OTHER_PROJECT)
    assert other.status_code == 403

"""Notification bodies for tests, built from the documented samples in ``samples/`` with the
bucket, keys, kinds and sequencers a test needs, each key encoded as its format does."""

from __future__ import annotations

import base64
import copy
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Change:
    key: str
    kind: str = "created"  # or "deleted"
    sequencer: str | None = None


def form(key: str) -> str:
    """S3/MinIO/OBS encoding: form-encoded, a space is '+'."""
    return quote_plus(key, safe="")


def _s3_record(template: dict[str, Any], section: str, bucket: str, change: Change, encode: Any) -> dict[str, Any]:
    record = copy.deepcopy(template)
    created = record["eventName"].startswith(("s3:", "obs:"))
    prefix = "s3:" if created else ""
    record["eventName"] = prefix + ("ObjectCreated:Put" if change.kind == "created" else "ObjectRemoved:Delete")
    record[section]["bucket"]["name"] = bucket
    obj = record[section]["object"]
    obj["key"] = encode(change.key)
    if change.sequencer is None:
        obj.pop("sequencer", None)
    else:
        obj["sequencer"] = change.sequencer
    return record


def s3(bucket: str, changes: list[Change]) -> dict[str, Any]:
    template = sample("s3_put.json")["Records"][0]
    return {"Records": [_s3_record(template, "s3", bucket, c, form) for c in changes]}


def minio(bucket: str, changes: list[Change]) -> dict[str, Any]:
    body = sample("minio_put.json")
    template = body["Records"][0]
    body["Records"] = [_s3_record(template, "s3", bucket, c, form) for c in changes]
    body["Key"] = f"{bucket}/{changes[0].key}"
    return dict(body)


def ceph(bucket: str, changes: list[Change]) -> dict[str, Any]:
    template = sample("ceph_put.json")["Records"][0]
    return {"Records": [_s3_record(template, "s3", bucket, c, lambda k: k) for c in changes]}


def obs(bucket: str, changes: list[Change]) -> dict[str, Any]:
    template = sample("obs_records.json")["Records"][0]
    return {"Records": [_s3_record(template, "obs", bucket, c, form) for c in changes]}


def smn_obs(bucket: str, changes: list[Change]) -> dict[str, Any]:
    body = sample("smn_obs_notification.json")
    body["message"] = json.dumps(obs(bucket, changes))
    return dict(body)


def eventbridge(bucket: str, changes: list[Change]) -> list[dict[str, Any]]:
    """One EventBridge event per change (EventBridge delivers events one by one)."""
    out = []
    for change in changes:
        body = sample("eventbridge_created.json" if change.kind == "created" else "eventbridge_deleted.json")
        body["detail"]["bucket"]["name"] = bucket
        body["detail"]["object"]["key"] = form(change.key)
        if change.sequencer is None:
            body["detail"]["object"].pop("sequencer", None)
        else:
            body["detail"]["object"]["sequencer"] = change.sequencer
        out.append(body)
    return out


def _oss_event(bucket: str, change: Change) -> dict[str, Any]:
    event = copy.deepcopy(sample("oss_events.json")["events"][0])
    event["eventName"] = "ObjectCreated:PutObject" if change.kind == "created" else "ObjectRemoved:DeleteObject"
    event["oss"]["bucket"]["name"] = bucket
    event["oss"]["object"]["key"] = change.key
    return dict(event)


def oss_mns(bucket: str, changes: list[Change]) -> dict[str, Any]:
    body = sample("oss_mns.json")
    events = {"events": [_oss_event(bucket, c) for c in changes]}
    body["Message"] = base64.b64encode(json.dumps(events).encode()).decode()
    return dict(body)


def oss_eventbridge(bucket: str, changes: list[Change]) -> list[dict[str, Any]]:
    out = []
    for change in changes:
        body = sample("oss_eventbridge.json")
        body["data"] = _oss_event(bucket, change)
        body["type"] = "oss:" + body["data"]["eventName"]
        body["subject"] = f"acs:oss:cn-hangzhou:1123456789098****:{bucket}/{change.key}"
        out.append(body)
    return out


def cos(bucket: str, changes: list[Change]) -> dict[str, Any]:
    """``bucket`` is ``name-appid`` as the COS API names it."""
    name, appid = bucket.rsplit("-", 1)
    template = sample("cos_put.json")["Records"][0]
    records = []
    for change in changes:
        record = copy.deepcopy(template)
        record["event"]["eventName"] = "cos:ObjectCreated:Put" if change.kind == "created" else "cos:ObjectRemove:Delete"
        record["cos"]["cosBucket"].update(name=name, appid=appid)
        encoded = quote(change.key, safe="/")
        record["cos"]["cosObject"]["key"] = f"/{appid}/{name}/{encoded}"
        record["cos"]["cosObject"]["url"] = f"http://{bucket}.cos.ap-chengdu.myqcloud.com/{encoded}"
        records.append(record)
    return {"Records": records}


def _grid_event(template: dict[str, Any], container: str, change: Change, *, cloud: bool) -> dict[str, Any]:
    event = copy.deepcopy(template)
    event["type" if cloud else "eventType"] = (
        "Microsoft.Storage.BlobCreated" if change.kind == "created" else "Microsoft.Storage.BlobDeleted")
    event["subject"] = f"/blobServices/default/containers/{container}/blobs/{change.key}"
    event["data"]["url"] = f"https://my-storage-account.blob.core.windows.net/{container}/{quote(change.key, safe='/')}"
    if change.sequencer is None:
        event["data"].pop("sequencer", None)
    else:
        event["data"]["sequencer"] = change.sequencer
    return dict(event)


def event_grid(container: str, changes: list[Change]) -> list[dict[str, Any]]:
    template = sample("eventgrid_created.json")[0]
    return [_grid_event(template, container, c, cloud=False) for c in changes]


def event_grid_cloudevents(container: str, changes: list[Change]) -> list[dict[str, Any]]:
    template = sample("eventgrid_cloudevent.json")
    return [_grid_event(template, container, c, cloud=True) for c in changes]


def obs_cloudevent(bucket: str, changes: list[Change]) -> list[dict[str, Any]]:
    out = []
    for change in changes:
        body = sample("obs_cloudevent.json")
        body["type"] = "OBS:DWR:ObjectCreated:PUT" if change.kind == "created" else "OBS:DWR:ObjectRemoved:DELETE"
        body["subject"] = change.key
        body["data"] = _s3_record(body["data"], "obs", bucket, change, form)
        out.append(body)
    return out


BUILDERS = {
    "s3": s3, "minio": minio, "ceph": ceph, "huawei-obs": obs, "smn-obs": smn_obs, "aliyun-mns": oss_mns,
    "tencent-cos": cos, "azure-event-grid": event_grid,
}
"""Formats whose one body carries every change."""

PER_EVENT = {"eventbridge": eventbridge, "aliyun-eventbridge": oss_eventbridge, "azure-cloudevents": event_grid_cloudevents,
             "huawei-cloudevents": obs_cloudevent}
"""Formats that deliver one event per body (a list of bodies)."""


# -- SNS signing with a certificate of the test's own ----------------------------------------------


class SnsSigner:
    """An RSA key and self-signed certificate standing in for SNS's; signs envelopes the way
    SNS documents (SignatureVersion 1: SHA1, 2: SHA256)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.amazonaws.com")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, envelope: dict[str, Any], version: str = "1") -> dict[str, Any]:
        from omsync.notifications.sns import string_to_sign

        envelope = dict(envelope, SignatureVersion=version)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        fields = {k: v for k, v in envelope.items() if isinstance(v, str)}
        envelope["Signature"] = base64.b64encode(
            self.key.sign(string_to_sign(fields), padding.PKCS1v15(), algorithm)).decode()
        return envelope


def sns_envelope(inner: dict[str, Any], cert_url: str) -> dict[str, Any]:
    body = sample("sns_notification.json")
    body["Message"] = json.dumps(inner)
    body["SigningCertURL"] = cert_url
    return dict(body)

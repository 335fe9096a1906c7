"""Each format read from its documented sample, and awkward keys decoded byte-exact per format."""

from __future__ import annotations

from typing import Any

import pytest

from omsync.notifications import EventKind, Ignore, UnknownFormat, parse_message, parse_notification
from omsync.notifications.model import SEQUENCER_WIDTH, normalise_sequencer
from omsync.notifications.sns import DEFAULT_SNS_HOST, SignatureProblem, sns_url_allowed, verify_signature
from tests.notifications import formats
from tests.notifications.formats import Change, sample

AWKWARD = ["with space/file name.txt", "a+b", "100%", "a%2Fb", "中文/文件名.txt", "what?x=1&y=2", "a#b",
           "emoji-😀🎉", "e\u0301", "\u00e9", "plain/file.txt", "a+ b  c"]


def one(body: Any) -> tuple[str, str, EventKind, str | None]:
    parsed = parse_notification(body)
    assert not parsed.ignored, parsed.ignored
    [record] = parsed.records
    return record.bucket, record.key, record.kind, record.sequencer


def test_s3_documented_sample() -> None:
    bucket, key, kind, seq = one(sample("s3_put.json"))
    assert (bucket, key, kind) == ("amzn-s3-demo-bucket", "HappyFace.jpg", EventKind.CREATED)
    assert seq == "0055AED6DCD90281E5".rjust(SEQUENCER_WIDTH, "0")


def test_s3_documented_encoding_red_flower() -> None:
    body = sample("s3_put.json")
    body["Records"][0]["s3"]["object"]["key"] = "red+flower.jpg"  # the S3 documentation's own example
    assert one(body)[1] == "red flower.jpg"
    parsed = parse_notification(body)
    assert parsed.records[0].sent == "red+flower.jpg"


def test_s3_test_event_is_ignored() -> None:
    parsed = parse_notification(sample("s3_test_event.json"))
    assert parsed.records == [] and parsed.ignored == {Ignore.TEST_EVENT.value: 1}


def test_eventbridge_created_and_deleted_samples() -> None:
    assert one(sample("eventbridge_created.json"))[:3] == ("amzn-s3-demo-bucket1", "example-key", EventKind.CREATED)
    assert one(sample("eventbridge_deleted.json"))[:3] == ("amzn-s3-demo-bucket1", "example-key", EventKind.DELETED)


def test_minio_ceph_obs_cos_oss_samples() -> None:
    assert one(sample("minio_put.json"))[:3] == ("images", "myphoto.jpg", EventKind.CREATED)
    assert one(sample("ceph_put.json"))[:3] == ("mybucket1", "myimage1.jpg", EventKind.CREATED)
    # OBS documents "TEST/中 文.jpg" as "TEST%2F%E4%B8%AD+%E6%96%87.jpg".
    assert one(sample("obs_records.json"))[:3] == ("examplebucket", "TEST/中 文.jpg", EventKind.CREATED)
    assert one(sample("cos_put.json"))[:3] == ("testpic-1253970026", "testfile", EventKind.CREATED)
    assert one(sample("oss_events.json"))[:3] == ("event-notification-test", "folder/object.txt", EventKind.CREATED)
    assert one(sample("oss_mns.json"))[:3] == ("event-notification-test", "folder/object.txt", EventKind.CREATED)
    assert one(sample("oss_eventbridge.json"))[:3] == ("mybucket", "test.txt", EventKind.CREATED)
    assert one(sample("obs_cloudevent.json"))[:3] == ("examplebucket", "TEST/中 文.jpg", EventKind.CREATED)


def test_event_grid_samples_and_validation() -> None:
    assert one(sample("eventgrid_created.json"))[:3] == ("test-container", "new-file.txt", EventKind.CREATED)
    assert one(sample("eventgrid_deleted.json"))[:3] == ("testcontainer", "file-to-delete.txt", EventKind.DELETED)
    assert one(sample("eventgrid_cloudevent.json"))[:3] == ("test-container", "new-file.txt", EventKind.CREATED)
    parsed = parse_notification(sample("eventgrid_validation.json"))
    assert parsed.validation_code == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6" and not parsed.records


def test_sns_and_smn_envelopes_unwrap() -> None:
    parsed = parse_notification(sample("sns_notification.json"))
    assert parsed.envelope is not None and parsed.envelope.service == "sns" and not parsed.records
    inner = parse_message(parsed.envelope.message)
    assert [(r.bucket, r.key) for r in inner.records] == [("amzn-s3-demo-bucket", "HappyFace.jpg")]
    smn = parse_notification(sample("smn_obs_notification.json"))
    assert smn.envelope is not None and smn.envelope.service == "smn" and smn.envelope.type == "Notification"
    assert [r.key for r in parse_message(smn.envelope.message).records] == ["TEST/中 文.jpg"]


@pytest.mark.parametrize("name", sorted(formats.BUILDERS) + sorted(formats.PER_EVENT))
def test_awkward_keys_decode_byte_exact(name: str) -> None:
    bucket = "bkt-1250000000" if name == "tencent-cos" else "bkt"
    changes = [Change(key, "created" if i % 3 else "deleted", f"{i + 1:04X}") for i, key in enumerate(AWKWARD)]
    if name in formats.BUILDERS:
        bodies = [formats.BUILDERS[name](bucket, changes)]
    else:
        bodies = formats.PER_EVENT[name](bucket, changes)
    records = []
    for body in bodies:
        parsed = parse_notification(body)
        if parsed.envelope is not None:
            parsed = parse_message(parsed.envelope.message)
        assert not parsed.ignored, parsed.ignored
        records.extend(parsed.records)
    assert [r.key for r in records] == AWKWARD
    assert [r.key.encode("utf-8") for r in records] == [k.encode("utf-8") for k in AWKWARD]  # never normalised
    assert {r.bucket for r in records} == {bucket}
    assert [r.kind.value for r in records] == [c.kind for c in changes]


def test_unsupported_events_and_bad_keys_are_counted_not_raised() -> None:
    body = formats.s3("bkt", [Change("ok")])
    body["Records"].append({**body["Records"][0], "eventName": "ObjectRestore:Post"})
    broken = dict(body["Records"][0])
    broken["s3"] = {"bucket": {"name": "bkt"}, "object": {"key": "bad%zz"}}
    body["Records"].extend([broken, "not a record", {}])
    parsed = parse_notification(body)
    assert [r.key for r in parsed.records] == ["ok"]
    assert parsed.ignored == {"unsupported_event": 1, "bad_key": 1, "malformed_record": 2}


@pytest.mark.parametrize("body", [{}, [], 5, "x", {"Records": "nope"}, [1, 2], {"foo": {"bar": 1}}])
def test_unknown_shapes_raise_unknown_format(body: Any) -> None:
    with pytest.raises(UnknownFormat):
        parse_notification(body)


def test_sequencers_compare_after_left_padding() -> None:
    short, long = normalise_sequencer("FF"), normalise_sequencer("0100")
    assert short is not None and long is not None and short < long
    assert normalise_sequencer("0055aed6dcd90281e5") == normalise_sequencer("55AED6DCD90281E5")
    assert normalise_sequencer("not-hex") is None and normalise_sequencer(12) is None


def test_sns_signature_verifies_and_forgery_fails() -> None:
    signer = formats.SnsSigner()
    for version in ("1", "2"):
        envelope = signer.sign(sample("sns_notification.json"), version)
        verify_signature(envelope, signer.pem)
        forged = dict(envelope, Message=envelope["Message"].replace("HappyFace", "Other"))
        with pytest.raises(SignatureProblem):
            verify_signature(forged, signer.pem)
    confirmation = signer.sign(sample("sns_subscription_confirmation.json"))
    verify_signature(confirmation, signer.pem)
    other = formats.SnsSigner()
    with pytest.raises(SignatureProblem):
        verify_signature(confirmation, other.pem)
    with pytest.raises(SignatureProblem):
        verify_signature(dict(confirmation, SignatureVersion="3"), signer.pem)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://sns.us-west-2.amazonaws.com/SimpleNotificationService-abc.pem", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True),
    ("http://sns.us-west-2.amazonaws.com/x.pem", False),
    ("https://sns.us-west-2.amazonaws.com.evil.example/x.pem", False),
    ("https://evil.example/sns.us-west-2.amazonaws.com/x.pem", False),
    ("https://user@sns.us-west-2.amazonaws.com/x.pem", False),
    ("https://sns.us-west-2.amazonaws.com:8443/x.pem", False),
    ("not a url", False),
])
def test_sns_url_pattern(url: str, allowed: bool) -> None:
    assert sns_url_allowed(url, DEFAULT_SNS_HOST) is allowed

"""Native change notifications of object stores, read into records of created and deleted
keys (pure: no I/O).

One module per format family: :mod:`.s3` (Amazon S3, EventBridge, MinIO, Ceph RGW, Huawei
OBS), :mod:`.sns` (SNS/SMN envelopes and SNS signatures), :mod:`.aliyun` (OSS via MNS or
EventBridge), :mod:`.tencent` (COS), :mod:`.azure` (Event Grid); :mod:`.detect` picks one
by the body's shape.
"""

from omsync.notifications.detect import MAX_DEPTH, UnknownFormat, parse_message, parse_notification
from omsync.notifications.model import Envelope, EventKind, Ignore, Parsed, Record

__all__ = [
    "MAX_DEPTH",
    "Envelope",
    "EventKind",
    "Ignore",
    "Parsed",
    "Record",
    "UnknownFormat",
    "parse_message",
    "parse_notification",
]

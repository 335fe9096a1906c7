"""Amazon SNS (and Huawei SMN) HTTP envelopes, and SNS message signatures.

An SNS HTTP(S) subscription POSTs ``{"Type", "MessageId", "TopicArn", "Message", "Timestamp",
"SignatureVersion", "Signature", "SigningCertURL", ...}``; for S3 notifications ``Message`` is
the S3 event JSON as a string. The signature is RSA over the canonical string documented by
SNS (``Name\\nValue\\n`` for a fixed list of fields in order), SHA1 for ``SignatureVersion`` 1
and SHA256 for 2, with the certificate at ``SigningCertURL``, which must be an HTTPS URL on an
SNS host (``sns.<region>.amazonaws.com``, ``.amazonaws.com.cn``). The same host rule applies to
``SubscribeURL`` before it is visited.

Huawei SMN envelopes use lower-case names (``type``, ``message``, ``topic_urn``,
``subscribe_url``, ...); they are read here, their signatures are not checked (the webhook
secret authenticates them).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from omsync.notifications.model import Envelope

__all__ = [
    "DEFAULT_SNS_HOST",
    "SignatureProblem",
    "is_smn_envelope",
    "is_sns_envelope",
    "read_envelope",
    "sns_url_allowed",
    "string_to_sign",
    "verify_signature",
]

DEFAULT_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]{1,40}\.amazonaws\.com(\.cn)?$")
_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SMN_FIELDS = {"type": "Type", "message": "Message", "message_id": "MessageId", "topic_urn": "TopicArn",
               "subject": "Subject", "timestamp": "Timestamp", "subscribe_url": "SubscribeURL",
               "signature": "Signature", "signing_cert_url": "SigningCertURL", "signature_version": "SignatureVersion"}


class SignatureProblem(ValueError):
    """The SNS message's signature is missing, malformed or does not verify."""


def is_sns_envelope(body: dict[str, Any]) -> bool:
    return body.get("Type") in _TYPES and isinstance(body.get("Message"), str) and "TopicArn" in body


def is_smn_envelope(body: dict[str, Any]) -> bool:
    return isinstance(body.get("type"), str) and "topic_urn" in body and isinstance(body.get("message"), str)


def read_envelope(body: dict[str, Any]) -> Envelope:
    """The envelope's fields as strings (only string values are kept: anything else cannot
    be part of a signed message)."""
    if is_sns_envelope(body):
        fields = {k: v for k, v in body.items() if isinstance(k, str) and isinstance(v, str)}
        return Envelope(service="sns", type=fields.get("Type", ""), fields=fields)
    fields = {_SMN_FIELDS[k]: v for k, v in body.items() if k in _SMN_FIELDS and isinstance(v, str)}
    return Envelope(service="smn", type=fields.get("Type", ""), fields=fields)


def string_to_sign(fields: dict[str, str]) -> bytes:
    """The canonical string SNS signs for this message (by its ``Type``)."""
    names: Iterable[str] = _NOTIFICATION_FIELDS if fields.get("Type") == "Notification" else _CONFIRMATION_FIELDS
    out = []
    for name in names:
        if name in fields:
            out.append(f"{name}\n{fields[name]}\n")
        elif name not in ("Subject",):
            raise SignatureProblem(f"signed field {name} is missing")
    return "".join(out).encode("utf-8")


def sns_url_allowed(url: str, hosts: re.Pattern[str], *, allow_http: bool = False) -> bool:
    """Whether ``url`` is an HTTPS URL (or HTTP when ``allow_http``, for tests) on a host matching
    ``hosts``, with no user info and no unusual port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return False
    if "@" in parts.netloc or not parts.hostname:
        return False
    if port is not None and parts.scheme == "https" and port != 443 and not allow_http:
        return False
    return bool(hosts.fullmatch(parts.hostname))


def verify_signature(fields: dict[str, str], certificate_pem: bytes) -> None:
    """Check the message's signature with the PEM certificate of its ``SigningCertURL``.

    Raises :class:`SignatureProblem` when the version is unknown, the signature is not Base64,
    the certificate is not an RSA certificate, or the signature does not match.
    """
    version = fields.get("SignatureVersion")
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # what SignatureVersion 1 is defined as
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise SignatureProblem("unknown SignatureVersion")
    try:
        signature = base64.b64decode(fields.get("Signature", ""), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureProblem("Signature is not Base64") from None
    if not signature:
        raise SignatureProblem("Signature is missing")
    try:
        key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    except ValueError:
        raise SignatureProblem("signing certificate cannot be read") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureProblem("signing certificate has no RSA key")
    try:
        key.verify(signature, string_to_sign(fields), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise SignatureProblem("signature does not match") from None

"""Dashboard sessions: signed cookies, CSRF tokens and the two ways to log in.

A session is a JSON payload signed with HMAC-SHA256 under a key derived from the master key (so
every process sharing the master key accepts the same sessions, and nothing new needs storing).
It is sent as an ``HttpOnly``, ``SameSite=Strict`` cookie limited to ``/ui`` and carries:

- the project it is scoped to and the access key that opened it (re-checked on every request,
  so revoking the key ends the session), or the operator flag with a fingerprint of the
  operator password (changing or removing the password ends every operator session);
- an expiry time;
- a random CSRF token that every state-changing form must echo;
- a random session id: logout records it server-side (:mod:`omsync.web.revocation`), so a
  copied cookie stops working everywhere once its session is logged out.

The payload is signed, not encrypted: it holds no secret (an access key id is not one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omsync.config import Settings
from omsync.secrets import KEY_FILE_NAME, load_or_create_key_file

SESSION_COOKIE = "omsync_ui"
LOGIN_COOKIE = "omsync_ui_login"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 8 * 3600
_KEY_LABEL = b"omsync dashboard session v1"


@dataclass(frozen=True)
class Session:
    """Who is logged in.

    ``project_id`` is None for the operator, who sees every project. ``access_key`` is the key
    that opened a project session (None for the operator). ``csrf`` must accompany every POST.
    """

    project_id: str | None
    access_key: str | None
    operator: bool
    expires: int
    csrf: str
    password_fingerprint: str | None = None
    sid: str = ""

    @property
    def label(self) -> str:
        """What the pages show about who is logged in (never a secret)."""
        return "operator (all projects)" if self.operator else f"project {self.project_id}"

    def sees(self, project_id: str) -> bool:
        """Whether this session may see a task of ``project_id``."""
        return self.operator or self.project_id == project_id


def operator_password(settings: Settings) -> str | None:
    """The configured operator password, or None when operator logins are off.

    Read as ``settings.dashboard_password`` (a ``SecretStr`` or plain string); empty means off.
    """
    value: Any = getattr(settings, "dashboard_password", None)
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text or None


def _master_key_material(settings: Settings) -> bytes:
    if settings.master_key is not None:
        return settings.master_key.get_secret_value().strip().encode("utf-8")
    return load_or_create_key_file(Path(settings.data_dir) / KEY_FILE_NAME).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and verifies session cookies under a key derived from the master key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return "SessionSigner(***)"

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionSigner:
        """Derive the signing key from the master key (``OMSYNC_MASTER_KEY`` or the key file).

        Raises ``OSError`` when the key file cannot be read or created.
        """
        return cls(hmac.new(_master_key_material(settings), _KEY_LABEL, hashlib.sha256).digest())

    def fingerprint(self, password: str) -> str:
        """A keyed fingerprint of the operator password, stored in operator sessions."""
        return hmac.new(self._key, b"operator:" + password.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def issue(self, *, project_id: str | None, access_key: str | None, operator: bool,
              password_fingerprint: str | None = None, lifetime: int = SESSION_SECONDS) -> tuple[Session, str]:
        """A new session with a fresh CSRF token, and its cookie value."""
        session = Session(
            project_id=project_id, access_key=access_key, operator=operator,
            expires=int(time.time()) + lifetime, csrf=secrets.token_urlsafe(24),
            password_fingerprint=password_fingerprint, sid=secrets.token_urlsafe(24),
        )
        payload = {
            "v": 1, "p": session.project_id, "ak": session.access_key, "op": session.operator,
            "exp": session.expires, "csrf": session.csrf, "pw": session.password_fingerprint,
            "sid": session.sid,
        }
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return session, f"{body}.{self._sign(body)}"

    def verify(self, cookie: str | None) -> Session | None:
        """The session of a cookie value, or None when it is absent, forged, malformed or expired."""
        if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode("ascii", "replace"), self._sign(body).encode("ascii")):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(payload, dict) or payload.get("v") != 1:
            return None
        expires, csrf, operator = payload.get("exp"), payload.get("csrf"), payload.get("op")
        project, access_key, fingerprint = payload.get("p"), payload.get("ak"), payload.get("pw")
        sid = payload.get("sid")
        if not isinstance(expires, int) or expires <= time.time() or not isinstance(csrf, str):
            return None
        if not isinstance(sid, str) or not sid:
            return None
        if operator is True:
            if not isinstance(fingerprint, str):
                return None
            return Session(None, None, True, expires, csrf, fingerprint, sid)
        if not isinstance(project, str) or not isinstance(access_key, str):
            return None
        return Session(project, access_key, False, expires, csrf, sid=sid)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii", "replace"), hashlib.sha256).digest())


def new_login_token() -> str:
    """A random token binding the login form to the browser that loaded it (login CSRF)."""
    return secrets.token_urlsafe(24)


def tokens_match(presented: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a form token with the expected one; False if either is missing."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))

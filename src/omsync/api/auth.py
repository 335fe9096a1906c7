"""Request authentication: SDK-HMAC-SHA256 signatures or operator-issued X-Auth-Token values.

An access key belongs to one project; a request naming another project's path is refused with
403, so a project never sees another's tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request

from omsync.api.errors import AUTH_FAILED, FORBIDDEN, OmsError
from omsync.api.signing import SignatureError, parse_authorization, verify_request
from omsync.services import Services


def _auth_failed(reason: str) -> OmsError:
    return OmsError(401, AUTH_FAILED, f"Incorrect IAM authentication information: {reason}")


async def authenticate(request: Request, services: Services) -> str:
    """Verify the request and return the project id its credentials belong to.

    Raises ``OmsError`` 401 APIGW.0301 for a missing, malformed, stale or wrong signature, an
    unknown or revoked access key, or an unknown token.
    """
    token = request.headers.get("x-auth-token")
    if token is not None and "authorization" not in request.headers:
        project = await services.keys.project_for_token(token)
        if project is None:
            raise _auth_failed("unknown token")
        return project
    header = request.headers.get("authorization")
    if header is None:
        raise _auth_failed("missing Authorization header")
    try:
        access_key = parse_authorization(header).access_key
    except SignatureError as exc:
        raise _auth_failed(str(exc)) from exc
    found = await services.keys.lookup_key(access_key)
    if found is None:
        raise _auth_failed("unknown access key")
    secret, project = found
    body = await request.body()
    try:
        verify_request(
            request.method,
            request.scope.get("raw_path") or request.url.path.encode(),
            request.scope.get("query_string", b""),
            request.headers,
            body,
            lambda ak: secret if ak == access_key else None,
            datetime.now(UTC),
            services.settings.signature_max_skew_seconds,
        )
    except SignatureError as exc:
        raise _auth_failed(str(exc)) from exc
    return project


async def authorize_project(request: Request, services: Services, project_id: str) -> None:
    """Authenticate and check that the credentials belong to ``project_id`` (403 otherwise)."""
    project = await authenticate(request, services)
    if project != project_id:
        raise OmsError(403, FORBIDDEN, "The credentials do not belong to this project.")

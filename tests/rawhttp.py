"""Raw HTTP requests signed with the official SDK's signer, for input the SDK itself never sends."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer


def signed_request(
    base_url: str,
    method: str,
    path: str,
    *,
    ak: str,
    sk: str,
    project_id: str | None = None,
    query: list[tuple[str, Any]] | None = None,
    body: bytes = b"",
    content_type: str = "application/json;charset=utf-8",
    headers: dict[str, str] | None = None,
    sdk_date: str | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """Sign ``path`` (already percent-encoded as it goes on the wire) and send it as is."""
    host = urlsplit(base_url).netloc
    header_params: dict[str, str] = {"Content-Type": content_type, "User-Agent": "omsync-tests"}
    if project_id is not None:
        header_params["X-Project-Id"] = project_id
    if sdk_date is not None:
        header_params["X-Sdk-Date"] = sdk_date
    header_params.update(headers or {})
    request = SdkRequest(
        method=method, schema="http", host=host, resource_path=path, query_params=query or [],
        header_params=header_params, body=body,
    )
    Signer(BasicCredentials(ak, sk, project_id)).sign(request)
    with httpx.Client(timeout=timeout) as client:
        return client.request(method, base_url + request.uri, headers=request.header_params, content=body)

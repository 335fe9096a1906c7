"""omsync extension: encrypt a credential for one of the project's data keys over the API.

``POST /v2/{project_id}/kms-keys/{key_id}/encrypt`` with ``{"plaintext": "..."}`` answers
``{"key_id": ..., "version": ..., "ciphertext": "okms1:..."}``, the value a caller puts into
``src_ak``/``src_sk``/``dst_ak``/``dst_sk`` or ``source_cdn.authentication_key`` with the
crypto type ``KMS`` (the same as ``omsync kms encrypt --key-id K``). Data keys are created,
listed and rotated with ``omsync kms`` on the service's host; a key of another project is
unknown here (404 ``OMSYNC.0404``). The plaintext is never logged or stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from omsync import kms
from omsync.api.errors import OmsError
from omsync.api.routes import ProjectId, ServicesDep, _body_schema, parse_body
from omsync.ledger.kms_keys import DataKeys

router = APIRouter(prefix="/v2/{project_id}/kms-keys")

UNKNOWN_KEY = "OMSYNC.0404"


class EncryptReq(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plaintext: Annotated[StrictStr, Field(min_length=1, max_length=1024)]


class EncryptResponse(BaseModel):
    key_id: str
    version: int
    ciphertext: str


@router.post("/{key_id}/encrypt", response_model=EncryptResponse, openapi_extra=_body_schema(EncryptReq))
async def encrypt_with_data_key(
    request: Request, project_id: ProjectId, services: ServicesDep,
    key_id: Annotated[str, Path(min_length=1, max_length=36)],
) -> EncryptResponse:
    """Encrypt ``plaintext`` with the current version of the project's data key ``key_id``."""
    body = await parse_body(request, EncryptReq)
    try:
        key = await DataKeys(services.db, services.box).load(key_id, project_id)
    except kms.UnknownDataKey as exc:
        raise OmsError(404, UNKNOWN_KEY, f"no data key {key_id} in this project (see omsync kms list)") from exc
    return EncryptResponse(key_id=key.key_id, version=key.current, ciphertext=kms.encrypt(key, body.plaintext))

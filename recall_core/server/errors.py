"""The one place where errors become gRPC status codes.

Everything the server can refuse is a :class:`~recall_core.errors.RecallError`;
:func:`status_for` maps it to a status code by walking the exception's class
hierarchy (the most specific mapped class wins), and :func:`abort` ends the
RPC with that code, the error's one-line message and a ``google.rpc``
``ErrorInfo`` detail. Anything that is not a ``RecallError`` is a bug of ours:
it is logged with its traceback on the server and answered with INTERNAL and
a request id, never with the traceback itself.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from recall_core.errors import (
    AllSourcesFailedError,
    ArtifactError,
    ConfigError,
    DataError,
    NotTrainedError,
    PluginError,
    ProjectError,
    RecallError,
    UnknownKindError,
    UnknownSourceError,
    UnknownUserError,
)

ERROR_DOMAIN = "recall.v1"
REQUEST_ID_HEADER = "x-request-id"
MAX_DETAIL_CHARS = 1000
log = logging.getLogger("recall.server")


class InvalidRequestError(RecallError):
    """The request itself is malformed (k out of range, bad id, empty request)."""


class NotReadyError(RecallError):
    """The server is still loading its sources, or is shutting down."""


class ReloadRefusedError(RecallError):
    """A reload would have swapped in an artifact that cannot serve; nothing changed."""


class OverloadedError(RecallError):
    """A bounded queue is full; the client should back off and retry."""


class DeadlineError(RecallError):
    """The client's deadline left no time (or ran out) for the work."""


class UnauthenticatedError(RecallError):
    """An admin call came without a bearer token."""


class PermissionDeniedError(RecallError):
    """An admin call came with a wrong bearer token."""


_CODES: dict[type[BaseException], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownSourceError: grpc.StatusCode.NOT_FOUND,
    UnknownUserError: grpc.StatusCode.NOT_FOUND,
    UnknownKindError: grpc.StatusCode.FAILED_PRECONDITION,  # the server's config, not the request
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,  # a request override (policy, weight)
    DataError: grpc.StatusCode.INVALID_ARGUMENT,
    NotTrainedError: grpc.StatusCode.FAILED_PRECONDITION,
    ArtifactError: grpc.StatusCode.FAILED_PRECONDITION,
    ProjectError: grpc.StatusCode.FAILED_PRECONDITION,
    PluginError: grpc.StatusCode.INTERNAL,  # a broken plugin is our defect, never the caller's
    AllSourcesFailedError: grpc.StatusCode.UNAVAILABLE,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    ReloadRefusedError: grpc.StatusCode.FAILED_PRECONDITION,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineError: grpc.StatusCode.DEADLINE_EXCEEDED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    RecallError: grpc.StatusCode.FAILED_PRECONDITION,  # e.g. a source failing to load on Reload
}


def status_for(error: BaseException) -> grpc.StatusCode:
    """The status code of ``error``: its most specific mapped class, else INTERNAL."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def describe(error: BaseException, request_id: str) -> tuple[grpc.StatusCode, str]:
    """``(code, one-line message)`` for ``error``; an unexpected error is logged here."""
    code = status_for(error)
    if isinstance(error, RecallError):
        message = " ".join(str(error).split())[:MAX_DETAIL_CHARS]
    else:
        log.error("unexpected error in request %s", request_id, exc_info=error)
        message = f"internal error (request id {request_id}); the server log has the details"
    return code, message


def abort(context: grpc.ServicerContext, error: BaseException, request_id: str) -> None:
    """End the RPC for ``error`` (raises, as ``context.abort`` does)."""
    code, message = describe(error, request_id)
    info = error_details_pb2.ErrorInfo(
        reason=type(error).__name__ if isinstance(error, RecallError) else "InternalError",
        domain=ERROR_DOMAIN, metadata={"request_id": request_id})
    detail = any_pb2.Any()
    detail.Pack(info)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail]))
    context.abort_with_status(_Status(status.code, status.details, (
        *status.trailing_metadata, (REQUEST_ID_HEADER, request_id))))


class _Status(NamedTuple):
    """A ``grpc.Status`` (grpc only reads these three attributes)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]

"""The server interceptor: request ids, error mapping, metrics and access logs.

One wrapper around every unary ``recall.v1.RecallService`` method does all
four, so each request pays for one extra Python frame rather than four. It
also takes over request deserialisation: grpc's own answer to bytes that do
not parse is INTERNAL, while a malformed request is the caller's error and
must be INVALID_ARGUMENT.

Request id: the request's ``request_id`` field when set, else the
``x-request-id`` metadata, else a fresh one. It is echoed in the response's
``request_id`` field, in the ``x-request-id`` trailing metadata and in the
``ErrorInfo`` of an error status. Handlers add fields to the access log line
with :func:`annotate`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import grpc

from recall_core.server import errors
from recall_core.server.errors import REQUEST_ID_HEADER, InvalidRequestError
from recall_core.server.metrics import ServerMetrics

SERVICE_PREFIX = "/recall.v1.RecallService/"
access_log = logging.getLogger("recall.access")

_call: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("recall_call")


def annotate(**fields: Any) -> None:
    """Add fields to the current request's access log line (no-op outside a request)."""
    current = _call.get(None)
    if current is not None:
        current.update(fields)


def current_request_id() -> str:
    """The id of the request being handled ("" outside a request)."""
    current = _call.get(None)
    return "" if current is None else str(current.get("request_id", ""))


def clean_request_id(raw: str) -> str:
    """``raw`` when it is a usable id (1-128 visible ASCII characters: it travels in a
    header), else ""."""
    if 0 < len(raw) <= 128 and raw.isascii() and raw.isprintable():
        return raw
    return ""


class ServerInterceptor(grpc.ServerInterceptor):
    """Wraps the service's unary methods; other services (health, reflection) pass through."""

    def __init__(self, metrics: ServerMetrics, log_requests: bool = True) -> None:
        self.metrics = metrics
        self.log_requests = log_requests
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(self, continuation: Callable[[Any], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not method.startswith(SERVICE_PREFIX):
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method[len(SERVICE_PREFIX):], handler.unary_unary,
                       handler.request_deserializer),
            request_deserializer=None,  # raw bytes: we parse, so a bad message is our error
            # Any object with SerializeToString: BatchRetrieve answers pre-written bytes
            # (wire.SerializedBatch) that the generated message serialiser would refuse.
            response_serializer=_serialize)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, name: str, behaviour: Callable[[Any, grpc.ServicerContext], Any],
              deserialize: Callable[[bytes], Any]) -> Callable[[bytes, grpc.ServicerContext], Any]:
        metrics = self.metrics

        def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            call = {"request_id": _metadata_request_id(context)}
            token = _call.set(call)
            metrics.inflight.inc()
            code = "OK"
            try:
                return self._invoke(behaviour, deserialize, raw, context, call)
            except Exception as error:
                aborted = _aborted_code(context)
                if aborted is not None:  # the handler aborted itself: grpc has the status
                    code = aborted
                    raise
                code = errors.status_for(error).name
                errors.abort(context, error, call["request_id"])  # raises
                raise
            finally:
                seconds = time.perf_counter() - started
                metrics.inflight.dec()
                metrics.request(name, code, seconds)
                if self.log_requests:
                    _log(name, code, seconds, context, call)
                _call.reset(token)

        return handle

    @staticmethod
    def _invoke(behaviour: Callable[[Any, grpc.ServicerContext], Any],
                deserialize: Callable[[bytes], Any], raw: bytes,
                context: grpc.ServicerContext, call: dict[str, Any]) -> Any:
        try:
            request = deserialize(raw)
        except Exception as error:  # noqa: BLE001 - any parse failure is the caller's
            raise InvalidRequestError(
                f"the request is not a valid message ({type(error).__name__})") from None
        given = clean_request_id(getattr(request, "request_id", ""))
        if given:
            call["request_id"] = given
        context.set_trailing_metadata(((REQUEST_ID_HEADER, call["request_id"]),))
        response = behaviour(request, context)
        if hasattr(response, "request_id") and not response.request_id:
            response.request_id = call["request_id"]
        return response


def _serialize(response: Any) -> bytes:
    return response.SerializeToString()


def _metadata_request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and clean_request_id(value):
            return value
    return os.urandom(8).hex()


def _aborted_code(context: grpc.ServicerContext) -> str | None:
    code = context.code() if hasattr(context, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK else None


def _log(method: str, code: str, seconds: float, context: grpc.ServicerContext,
         call: dict[str, Any]) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    line = {"method": method, "code": code, "ms": round(seconds * 1000, 3),
            "peer": context.peer(), **call}
    access_log.info(json.dumps(line, separators=(",", ":"), default=str))

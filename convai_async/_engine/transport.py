"""The one I/O boundary: send a POST, return status, the headers the protocol reads, and bytes.

``Transport`` is the seam the engine is written against (tests use an in-memory one);
``AiohttpTransport`` is its only implementation that talks to the network, and this module is the
only one that imports aiohttp's client. Every aiohttp exception is translated here, and raised
outside the ``except`` block so that no aiohttp object (whose repr may hold the request headers,
so the key) is chained to our errors.
Redirects are never followed. Response bodies are read up to a size cap, counted after
decompression: ``Accept-Encoding: identity`` is asked for, and a body compressed anyway is
inflated here in bounded steps, so a gzip bomb costs at most the cap in memory.

The API key and a custom LLM key are revealed only inside the aiohttp call itself: the
request's headers and a ``SecretBody`` are built in the call's arguments, never kept in a
variable or an attribute. After ``close()`` the transport refuses to send and opens nothing.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import aiohttp
from attrs import field, frozen

from .._wire.secrets import Secret, SecretBody
from ..errors import (
    ClientClosedError,
    ConvaiConnectionError,
    ConvaiError,
    ConvaiTimeoutError,
    UnexpectedResponseError,
)

__all__ = ["API_KEY_HEADER", "AiohttpTransport", "RawResponse", "Transport"]

API_KEY_HEADER = "CONVAI-API-KEY"
_KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms")
_IDENTITY = frozenset({"", "identity"})
_INFLATED = frozenset({"gzip", "x-gzip", "deflate"})
_ZLIB_OR_GZIP = zlib.MAX_WBITS | 32  # zlib's automatic header detection
_CONNECTION_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(aiohttp, "ConnectionTimeoutError", None),) if t is not None
)


@frozen
class RawResponse:
    """An answer as received. Only the status shows in its repr: the rest is the server's."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class Transport(Protocol):
    """Sends one request. Raises ``TransportError`` when no HTTP answer came back."""

    async def send(self, path: str, body: bytes | SecretBody, *, max_bytes: int) -> RawResponse:
        """POST ``body`` to ``path`` (a ``SecretBody`` is revealed as it is sent); the answer's
        body is read up to ``max_bytes``. Raises ``ClientClosedError`` once closed."""
        ...

    async def close(self) -> None:
        """Release what the transport opened (a session passed in by the caller stays open);
        from then on, refuse to send."""
        ...


class AiohttpTransport:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        headers: Mapping[str, str],
        timeout: float,
        connect_timeout: float,
        pool_size: int,
        session: aiohttp.ClientSession | None,
        trace_configs: Sequence[aiohttp.TraceConfig] | None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {**headers, "Accept-Encoding": "identity"}
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._pool_size = pool_size
        self._session = session
        self._owns_session = session is None
        # A caller's session may inflate bodies itself (counted after inflating); ours does not.
        self._inflate_here = session is None or not getattr(session, "auto_decompress", True)
        self._trace_configs = list(trace_configs or ())
        self._closed = False

    def _open_session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop: a client may be built at import or start-up.
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=self._pool_size, enable_cleanup_closed=True
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trace_configs=self._trace_configs or None,
            auto_decompress=False,  # inflated here, in bounded steps (see _read_answer)
        )

    async def send(self, path: str, body: bytes | SecretBody, *, max_bytes: int) -> RawResponse:
        session = self._session
        if session is None:
            if self._closed:
                raise ClientClosedError("this ConvaiClient is closed; create a new one")
            session = self._session = self._open_session()
        failure: ConvaiError
        try:
            # No local holds the response: a traceback's captured locals never show its headers.
            return await _read_answer(
                await session.post(
                    self._base_url + path,
                    data=body if type(body) is bytes else body.reveal(),  # type: ignore[union-attr]
                    headers={**self._headers, API_KEY_HEADER: self._api_key.reveal()},
                    timeout=self._timeout,
                    allow_redirects=False,
                    raise_for_status=False,
                ),
                max_bytes,
                self._inflate_here,
            )
        except _Refused as refused:
            failure = UnexpectedResponseError(refused.problem, status=refused.status, endpoint=path)
        except _CONNECTION_TIMEOUT:
            failure = ConvaiTimeoutError("connection timed out", endpoint=path, request_sent=False)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            failure = ConvaiTimeoutError("timed out", endpoint=path, request_sent=True)
        except aiohttp.ClientConnectorError as exc:
            failure = ConvaiConnectionError(
                f"cannot connect to {exc.host}:{exc.port} ({type(exc.os_error).__name__})",
                endpoint=path,
                request_sent=False,
            )
        except aiohttp.ClientPayloadError:
            failure = ConvaiConnectionError(
                "response body cut short", endpoint=path, request_sent=True
            )
        except aiohttp.ServerDisconnectedError:
            failure = ConvaiConnectionError(
                "server closed the connection without answering", endpoint=path, request_sent=True
            )
        except aiohttp.ClientError as exc:
            failure = ConvaiConnectionError(
                f"connection failed ({type(exc).__name__})", endpoint=path, request_sent=True
            )
        raise failure

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()


class _Refused(Exception):
    """An answer not read to its end (too large, badly compressed); becomes an
    UnexpectedResponseError in ``send``, raised afresh so that no frame reading it is kept."""

    def __init__(self, status: int, problem: str) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem


async def _read_answer(
    response: aiohttp.ClientResponse, max_bytes: int, inflate_here: bool
) -> RawResponse:
    """Status, the headers the protocol reads, and the body up to ``max_bytes`` (counted after
    decompression). Raises ``_Refused`` past the cap without reading the rest."""
    try:
        status = response.status
        found = response.headers
        kept = {name: found[name] for name in _KEPT_HEADERS if name in found}
        declared = response.content_length  # for a compressed body, its compressed size
        if declared is not None and declared > max_bytes:
            raise _Refused(status, _too_large(max_bytes))
        encoding = found.get("content-encoding", "").strip().lower()
        if encoding in _IDENTITY:
            if declared is not None:
                content = await response.read()
            else:
                content = await _read_capped(response.content, status, max_bytes, None)
        elif not inflate_here:  # a caller's session inflates: count what it yields
            content = await _read_capped(response.content, status, max_bytes, None)
        elif encoding in _INFLATED:
            inflater = zlib.decompressobj(_ZLIB_OR_GZIP)
            content = await _read_capped(response.content, status, max_bytes, inflater)
        else:
            raise _Refused(status, f"unsupported Content-Encoding {encoding[:40]!r}")
    except BaseException:
        response.close()  # the rest of the body is not read: the connection cannot be reused
        raise
    response.release()
    return RawResponse(status, kept, content)


async def _read_capped(
    stream: aiohttp.StreamReader,
    status: int,
    max_bytes: int,
    inflater: zlib._Decompress | None,
) -> bytes:
    """The body (inflated when ``inflater`` is given), refused as soon as it passes ``max_bytes``.

    Each compressed chunk is inflated to at most one byte past the room left, so memory stays
    within the cap whatever the compression ratio."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in stream.iter_any():
            if inflater is not None:
                chunk = inflater.decompress(chunk, max_bytes - size + 1)
            size += len(chunk)
            if size > max_bytes:
                raise _Refused(status, _too_large(max_bytes))
            parts.append(chunk)
    except zlib.error:
        raise _Refused(status, "compressed body is corrupt") from None
    if inflater is not None and not inflater.eof:
        raise _Refused(status, "compressed body ends early")
    return b"".join(parts)


def _too_large(max_bytes: int) -> str:
    return f"response body larger than the {max_bytes}-byte cap"

"""The one I/O boundary: send a POST, return status, the headers the protocol reads, and bytes.

``Transport`` is the seam the engine is written against (tests use an in-memory one);
``AiohttpTransport`` is its only implementation that talks to the network, and this module is the
only one that imports aiohttp's client. Every aiohttp exception is translated here, and raised
outside the ``except`` block so that no aiohttp object (whose repr may hold the request headers,
so the key) is chained to our errors.
Redirects are never followed. Response bodies are read up to a size cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

import aiohttp
from attrs import frozen

from ..errors import ConvaiConnectionError, ConvaiError, ConvaiTimeoutError, UnexpectedResponseError

__all__ = ["AiohttpTransport", "RawResponse", "Transport"]

_KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms")
_CONNECTION_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(aiohttp, "ConnectionTimeoutError", None),) if t is not None
)


@frozen
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one request. Raises ``TransportError`` when no HTTP answer came back."""

    async def send(self, path: str, body: bytes, *, max_bytes: int) -> RawResponse:
        """POST ``body`` to ``path``; the answer's body is read up to ``max_bytes``."""
        ...

    async def close(self) -> None:
        """Release what the transport opened (a session passed in by the caller stays open)."""
        ...


class AiohttpTransport:
    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float,
        connect_timeout: float,
        pool_size: int,
        session: aiohttp.ClientSession | None,
        trace_configs: Sequence[aiohttp.TraceConfig] | None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._pool_size = pool_size
        self._session = session
        self._owns_session = session is None
        self._trace_configs = list(trace_configs or ())

    def _open_session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop: a client may be built at import or start-up.
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=self._pool_size, enable_cleanup_closed=True
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trace_configs=self._trace_configs or None,
            auto_decompress=True,
        )

    async def send(self, path: str, body: bytes, *, max_bytes: int) -> RawResponse:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        failure: ConvaiError
        try:
            async with session.post(
                self._base_url + path,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as response:
                found = response.headers
                kept = {name: found[name] for name in _KEPT_HEADERS if name in found}
                content = await _read_capped(response, path, max_bytes)
                return RawResponse(response.status, kept, content)
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
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()


async def _read_capped(response: aiohttp.ClientResponse, path: str, max_bytes: int) -> bytes:
    """The body, or UnexpectedResponseError past ``max_bytes`` without reading it all."""
    declared = response.content_length
    if declared is not None:
        if declared > max_bytes:
            raise _too_large(response.status, path, max_bytes)
        return await response.read()
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(response.status, path, max_bytes)
        parts.append(chunk)
    return b"".join(parts)


def _too_large(status: int, path: str, max_bytes: int) -> UnexpectedResponseError:
    return UnexpectedResponseError(
        f"response body larger than the {max_bytes}-byte cap", status=status, endpoint=path
    )

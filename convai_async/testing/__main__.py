"""``python -m convai_async.testing``: serve a FakeConvai on 127.0.0.1 from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import cast

from .faults import RETRY_AFTER_STYLES, Faults, RetryAfterStyle
from .server import DEFAULT_FAKE_API_KEY, FakeConvai

__all__ = ["build_parser", "main"]

DEFAULT_CHARACTERS = 1000
DEFAULT_BURST = 10

_DESCRIPTION = """\
Serve a fake Convai API (the character and custom LLM endpoints) on 127.0.0.1, for trying
the client or your own code without a real key. It prints its URL on the first line (alone,
for scripts), then the API key it expects, then runs until Ctrl-C or SIGTERM, or until
--seconds have passed. GET <url>/_fake/stats answers its counters as JSON.
"""

_EPILOG = """\
example:
  python -m convai_async.testing --port 8080 --characters 500 --rate-limit 50 \\
      --retry-after decimal --latency 0.03
  CONVAI_API_KEY=fake-convai-key convai-async --base-url http://127.0.0.1:8080 list
"""


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convai_async.testing",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--port", type=int, default=0, help="port to listen on (default: 0, any free port)")
    add(
        "--characters",
        type=_count,
        default=DEFAULT_CHARACTERS,
        help=f"how many characters to seed, the same ones every run "
        f"(default: {DEFAULT_CHARACTERS})",
    )
    add(
        "--api-key",
        default=DEFAULT_FAKE_API_KEY,
        help="the CONVAI-API-KEY it accepts; any other key gets a 401 "
        f"(default: {DEFAULT_FAKE_API_KEY})",
    )
    add(
        "--latency",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="delay added to every answer (default: 0)",
    )
    add(
        "--rate-limit",
        type=_positive,
        default=None,
        metavar="PER_SECOND",
        help="answer 429 above this many requests per second, as a token bucket "
        "(default: no limit)",
    )
    add(
        "--burst",
        type=int,
        default=DEFAULT_BURST,
        help=f"how many requests the rate limit lets through at once (default: {DEFAULT_BURST})",
    )
    add(
        "--retry-after",
        choices=RETRY_AFTER_STYLES,
        default="seconds",
        help="how a 429 says when to retry: whole seconds rounded up, decimal seconds "
        "(0.35), an HTTP date, or no Retry-After header (default: seconds)",
    )
    add(
        "--tenant-rate",
        type=_non_negative,
        default=0.0,
        metavar="PER_SECOND",
        help="another tenant's requests per second through the same rate limit (default: 0)",
    )
    add(
        "--error-ratio",
        type=_ratio,
        default=0.0,
        metavar="RATIO",
        help="share of requests answered 503 with an HTML page, 0 to 1 (default: 0)",
    )
    add(
        "--seconds",
        type=_non_negative,
        default=0.0,
        help="stop after this many seconds; 0 runs until Ctrl-C or SIGTERM (default: 0)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    faults = Faults(
        latency=args.latency,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=cast(RetryAfterStyle, args.retry_after),
        tenant_rate=args.tenant_rate,
        server_error_ratio=args.error_ratio,
    )
    fake = FakeConvai(
        args.characters, api_key=args.api_key, faults=faults, record=False, port=args.port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still interrupts
            loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    async with fake:
        print(fake.url, flush=True)
        print(f"API key: {fake.api_key}", flush=True)
        until = "Ctrl-C or SIGTERM"
        if args.seconds > 0:
            until = f"{args.seconds:g} s have passed (--seconds), or Ctrl-C or SIGTERM"
        print(f"serving {args.characters} characters until {until}", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.seconds if args.seconds > 0 else None)
        why = "stopped by a signal" if stop.is_set() else "time limit reached"
        stats = fake.snapshot()
        requests = sum(stats["requests"].values())
        print(
            f"stopped ({why}) after {time.monotonic() - started:.1f} s: {requests} requests, "
            f"{stats['rate_limited']} answered 429",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except OSError as error:  # e.g. the port is taken
        print(
            f"error: cannot serve on port {args.port}: {error.strerror or error}", file=sys.stderr
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

"""``convai-async demo``: a whole-fleet migration and its rollback against a rate-limiting fake.

The embedded FakeConvai enforces a rate limit the client is not told about: the first seconds
show 429s while the client discovers it, then the rate holds steady near the limit. Every
character changes (none is on the target yet); each is verified after the migration and again
after the rollback. The journals stay in the current directory (or --journal-dir).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from .. import BulkReport, ConvaiClient
from ..testing import FakeConvai, Faults
from . import documents as docs
from .exits import EXIT_FAILED, EXIT_OK
from .output import Output
from .running import run_bulk

__all__ = ["cmd_demo"]

DEMO_CHARACTERS = 2000  # about 10-12 s each way at the limit below
DEMO_CONCURRENCY = 64
DEMO_FAULTS = Faults(rate_limit=200.0, burst=20, latency=(0.02, 0.05))
TARGET_MODEL = "gpt-4.1"
TARGET_TEMPERATURE = 0.4

Settings = tuple[str | None, float | None]


def wrong(fleet: Mapping[str, Settings], wanted: Mapping[str, Settings]) -> list[str]:
    return [char_id for char_id, settings in wanted.items() if fleet.get(char_id) != settings]


async def settings_of(client: ConvaiClient) -> dict[str, Settings]:
    return {c.char_id: (c.model, c.temperature) for c in await client.characters.list()}


def against_ideal(report: BulkReport, limit: float) -> str:
    ideal = report.total / limit
    share = report.rate_limited / report.requests if report.requests else 0.0
    return (
        f"{report.total} updates in {report.duration:.1f} s against an ideal {ideal:.1f} s "
        f"at the server's {limit:g}/s ({ideal / report.duration:.0%} of ideal); "
        f"{report.rate_limited} of {report.requests} requests answered 429 ({share:.1%})"
        if report.duration > 0
        else f"{report.total} updates"
    )


async def cmd_demo(args: argparse.Namespace, output: Output) -> int:
    characters = args.characters or DEMO_CHARACTERS
    folder = Path(args.journal_dir or ".")
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    journal = folder / f"convai-demo-{stamp}.jsonl"
    rollback_journal = folder / f"convai-demo-{stamp}-rollback.jsonl"
    limit = DEMO_FAULTS.rate_limit or 0.0
    async with FakeConvai(characters=characters, faults=DEMO_FAULTS, record=False) as fake:
        output.note(
            f"FakeConvai at {fake.url}: {characters} characters, 20-50 ms latency, "
            f"a {limit:g} requests/s limit the client is not told (429 + Retry-After)"
        )
        async with ConvaiClient(
            api_key=fake.api_key,
            base_url=fake.url,
            max_concurrency=args.concurrency or DEMO_CONCURRENCY,
        ) as client:
            before = await settings_of(client)
            plan = await client.plan_migration(
                to_model=TARGET_MODEL, temperature=TARGET_TEMPERATURE
            )
            output.note(plan.summary())
            reports: list[BulkReport] = []

            def keep(phase: str, report: BulkReport) -> dict[str, object]:
                reports.append(report)
                return docs.document("demo", phase=phase, report=docs.report_fields(report))

            code = await run_bulk(
                client,
                output,
                "migrate",
                lambda view, stop: client.apply(plan, journal, view, stop=stop),
                lambda report: keep("migrate", report),
            )
            output.note(against_ideal(reports[0], limit))
            settled = client.stats.effective_rate
            if settled is not None:
                output.note(f"the client found the limit and holds {settled:.0f} requests/s")
            migrated = wrong(await settings_of(client), dict.fromkeys(before, plan_target()))
            if code != EXIT_OK or migrated:
                output.note(f"verification failed for {len(migrated)} characters")
                return code or EXIT_FAILED
            output.note(f"verified: all {len(before)} characters are on {TARGET_MODEL}")
            output.note(f"rolling back from {journal.resolve()}")
            code = await run_bulk(
                client,
                output,
                "rollback",
                lambda view, stop: client.rollback(
                    journal, rollback_journal=rollback_journal, on_progress=view, stop=stop
                ),
                lambda report: keep("rollback", report),
            )
            restored = wrong(await settings_of(client), before)
    if code != EXIT_OK or restored:
        output.note(f"rollback verification failed for {len(restored)} characters")
        return code or EXIT_FAILED
    output.note(f"verified: all {len(before)} characters are back on their model and temperature")
    output.note(f"journals: {journal.resolve()} and {rollback_journal.resolve()}")
    return EXIT_OK


def plan_target() -> Settings:
    return (TARGET_MODEL, TARGET_TEMPERATURE)

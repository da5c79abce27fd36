"""The commands: each turns its parsed arguments into public client calls and prints a result.

Every command returns its exit code or raises; ``main`` maps errors to codes (``exits``). Text
goes through ``Output.result`` with the matching --json document (``documents``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from .. import BulkReport, Character, CharacterUpdate, ConvaiClient, catalog
from . import documents as docs
from .exits import EXIT_OK, UsageError
from .inputs import char_ids_from, confirm, csv_updates, llm_secret, open_text, updates_for
from .output import Mode, Output, table
from .progress import Feedback
from .running import run_bulk, streamed

__all__ = ["COMMANDS", "cmd_models"]

Command = Callable[[ConvaiClient, argparse.Namespace, Output], Awaitable[int]]
CHARACTER_COLUMNS = ("char_id", "name", "model", "temperature")
CHARACTER_HEADERS = ("ID", "NAME", "MODEL", "TEMPERATURE")


async def check_models(client: ConvaiClient, codes: Iterable[str], allowed: bool) -> None:
    """Refuse model codes that are neither built in nor registered (like ``migrate`` does)."""
    if allowed:
        return
    for code in sorted(set(codes)):
        if not await client.is_known_model(code):
            raise UsageError(
                f"--model: {code!r} is neither a built-in model code nor a registered custom "
                "LLM (see `convai-async models --custom`; --allow-unknown-model to use it anyway)"
            )


async def bulk(
    client: ConvaiClient,
    args: argparse.Namespace,
    output: Output,
    updates: Iterable[CharacterUpdate],
    total: int,
) -> int:
    """set-model, set-temperature and update: a bulk update, streamed with --json-lines."""

    def run(view: Feedback, stop: asyncio.Event) -> Awaitable[BulkReport]:
        if output.mode is Mode.JSON_LINES:
            return streamed(
                client,
                output,
                updates,
                total=total,
                journal=args.journal,
                on_progress=view,
                stop=stop,
            )
        return client.bulk_update(
            updates, journal=args.journal, on_progress=view, total=total, stop=stop
        )

    return await run_bulk(
        client,
        output,
        args.command,
        run,
        lambda report: docs.document(args.command, report=docs.report_fields(report)),
    )


async def cmd_set_model(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    updates = updates_for(char_ids_from(args), model=args.model)
    await check_models(client, [args.model], args.allow_unknown_model)
    return await bulk(client, args, output, updates, len(updates))


async def cmd_set_temperature(
    client: ConvaiClient, args: argparse.Namespace, output: Output
) -> int:
    updates = updates_for(char_ids_from(args), temperature=args.temperature)
    return await bulk(client, args, output, updates, len(updates))


async def cmd_update(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    source = "stdin" if args.csv == "-" else args.csv
    if args.csv == "-":
        text = sys.stdin.read()

        def sheet() -> Iterator[CharacterUpdate]:
            return csv_updates(io.StringIO(text), source)

    else:
        if not Path(args.csv).is_file():
            raise UsageError(f"--csv: no such file: {args.csv}")

        def sheet() -> Iterator[CharacterUpdate]:
            with open_text(args.csv) as file:
                yield from csv_updates(file, source)

    total, models = 0, set()
    for update in sheet():  # every row is checked before anything is sent
        total += 1
        if update.model is not None:
            models.add(update.model)
    await check_models(client, models, args.allow_unknown_model)
    return await bulk(client, args, output, sheet(), total)


def characters_table(rows: list[dict[str, object]]) -> str:
    return table(CHARACTER_HEADERS, docs.rows(rows, CHARACTER_COLUMNS))


async def cmd_get(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    row = docs.character_fields(await client.characters.get(args.char_id))
    output.result(characters_table([row]), docs.document("get", character=row))
    return EXIT_OK


async def cmd_list(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    rows = [
        docs.character_fields(c)
        for c in await client.characters.list()
        if args.model is None or c.model == args.model
    ]
    output.result(characters_table(rows), docs.document("list", characters=rows))
    return EXIT_OK


async def cmd_migrate(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    where = None
    if args.where_name:
        try:
            pattern = re.compile(args.where_name)
        except re.error as error:
            raise UsageError(f"--where-name: {error}") from None

        def where(character: Character) -> bool:
            return bool(pattern.search(character.name or ""))

    plan = await client.plan_migration(
        to_model=args.to_model,
        from_model=args.from_model,
        temperature=args.temperature,
        where=where,
        allow_unknown_model=args.allow_unknown_model,
    )
    selection = {"from_model": args.from_model, "where_name": args.where_name}
    plan_fields = docs.plan_fields(plan, selection)
    if args.dry_run or not plan.updates:
        note = "(dry run: nothing sent)" if args.dry_run else "nothing to change"
        output.result(
            f"{plan.summary()}\n{note}",
            docs.document("migrate", plan=plan_fields, dry_run=args.dry_run, report=None),
        )
        return EXIT_OK
    output.note(plan.summary())
    confirm(output, f"Apply {len(plan.updates)} updates?", args.yes)
    journal = args.journal or f"convai-migrate-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
    output.note(
        f"journal: {journal} (to resume: the same command with --journal {journal}; "
        f"to undo: convai-async rollback --journal {journal})"
    )
    return await run_bulk(
        client,
        output,
        "migrate",
        lambda view, stop: client.apply(plan, journal, view, stop=stop),
        lambda report: docs.document(
            "migrate", plan=plan_fields, dry_run=False, report=docs.report_fields(report)
        ),
    )


async def cmd_rollback(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    journal = Path(args.journal)
    if not journal.is_file():
        raise UsageError(f"--journal: no such file: {journal}")
    confirm(output, f"Restore every character changed in {journal}?", args.yes)
    return await run_bulk(
        client,
        output,
        "rollback",
        lambda view, stop: client.rollback(
            journal, rollback_journal=args.rollback_journal, on_progress=view, stop=stop
        ),
        lambda report: docs.document("rollback", report=docs.report_fields(report)),
    )


async def cmd_models(client: ConvaiClient | None, args: argparse.Namespace, output: Output) -> int:
    flagship = True if args.flagship else None
    rows = [
        docs.builtin_model_fields(m)
        for m in catalog.models(provider=args.provider, flagship=flagship)
    ]
    if args.custom and client is not None:
        rows += [docs.custom_as_catalog_fields(m) for m in await client.llm_models.list()]
    columns = ("code", "display_name", "provider", "flagship", "uncensored", "custom")
    output.result(
        table([c.replace("_", " ").upper() for c in columns], docs.rows(rows, columns)),
        docs.document("models", models=rows),
    )
    return EXIT_OK


async def cmd_llm(client: ConvaiClient, args: argparse.Namespace, output: Output) -> int:
    models = client.llm_models
    output.flags.update(base_url="--llm-base-url", api_key="--llm-api-key-env/-stdin")
    name = f"llm-{args.llm_command}"
    if args.llm_command == "list":
        rows = [docs.custom_model_fields(m) for m in await models.list()]
        columns = ("model_group_name", "model_name", "display_name", "base_url", "is_uncensored")
        headers = ("GROUP", "MODEL", "DISPLAY NAME", "BASE URL", "UNCENSORED")
        output.result(table(headers, docs.rows(rows, columns)), docs.document(name, models=rows))
    elif args.llm_command == "register":
        registered = await models.register(
            model_group_name=args.group,
            model_name=args.model_name,
            api_key=llm_secret(args, required=True) or "",
            is_uncensored=args.uncensored,
            display_name=args.display_name,
            base_url=args.llm_base_url,
        )
        output.result(
            f"registered {registered.model_group_name}",
            docs.document(
                name,
                model_group_name=registered.model_group_name,
                model_name=registered.model_name,
                display_name=registered.display_name,
                reconciled=registered.reconciled,
                transaction_id=registered.transaction_id,
            ),
        )
    elif args.llm_command == "update":
        updated = await models.update(
            args.group,
            display_name=args.display_name,
            base_url=args.llm_base_url,
            api_key=llm_secret(args, required=False),
            is_uncensored=args.uncensored,
        )
        output.result(
            f"updated {', '.join(updated.updated_fields)}",
            docs.document(
                name,
                model_group_name=args.group,
                updated_fields=list(updated.updated_fields),
                transaction_id=updated.transaction_id,
            ),
        )
    else:
        confirm(output, f"Deregister {args.group}?", args.yes)
        # the library refuses a model characters still use (ModelInUseError) unless forced
        deregistered = await models.deregister(args.group, force=args.force)
        output.result(
            f"deregistered {args.group}",
            docs.document(
                name,
                model_group_name=args.group,
                reconciled=deregistered.reconciled,
                transaction_id=deregistered.transaction_id,
            ),
        )
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "set-model": cmd_set_model,
    "set-temperature": cmd_set_temperature,
    "update": cmd_update,
    "get": cmd_get,
    "list": cmd_list,
    "migrate": cmd_migrate,
    "rollback": cmd_rollback,
    "models": cmd_models,
    "llm": cmd_llm,
}

"""`triggers backtest FILE|ID --from TIME --to TIME [--json] [--max-events N]`: what a trigger
would have done over the events already on its source topics. Produces nothing anywhere."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from tqdm import tqdm

from app.backtest.runner import Outcome, run_backtest, source_topics
from app.cli.config_files import read_config
from app.domain.backtest import NotBacktestable, backtestable, check_range, parse_time
from app.domain.definitions import CompiledTrigger, compile_definition
from app.errors import InvalidDefinition
from app.settings import Settings
from app.topics import Topics

EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C
BAR_WIDTH = 40


class BacktestRefused(Exception):
    """The command cannot run: `errors` to print, `code` to exit with (the CLI's convention)."""

    def __init__(self, errors: list[str], code: int) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
        self.code = code


async def backtest_command(target: str, start_text: str | None, end_text: str | None, as_json: bool,
                           max_events: int, settings: Settings, topics: Topics,
                           stored: Callable[[], Awaitable[dict[str, bytes | None]]],
                           invalid: int, usage: int) -> None:
    """Run it and print the report; BacktestRefused for bad input (`invalid`: a definition with
    errors; `usage`: options, an unknown id)."""
    if not start_text or not end_text:
        raise BacktestRefused(["backtest needs --from TIME and --to TIME"], usage)
    now = datetime.now(UTC)
    try:
        start, end = parse_time(start_text, now, "--from"), parse_time(end_text, now, "--to")
        check_range(start, end, "--from", "--to")
    except ValueError as exc:
        raise BacktestRefused([str(exc)], usage) from None
    if max_events < 0:
        raise BacktestRefused([f"--max-events must be 0 (no limit) or more, not {max_events}"], usage)
    trigger = await _trigger(target, stored, topics, invalid, usage)
    outcome = await _run(settings, topics, trigger, start, end, max_events, as_json)
    if as_json:
        print(json.dumps(outcome.report, indent=2))
    else:
        print(text_report(outcome, sorted(source_topics(topics, trigger)), max_events))
    if outcome.interrupted:
        sys.exit(EXIT_INTERRUPTED)


async def _trigger(target: str, stored: Callable[[], Awaitable[dict[str, bytes | None]]], topics: Topics,
                   invalid: int, usage: int) -> CompiledTrigger:
    """A definition file (checked whole, as `triggers apply` does) or a published trigger's id."""
    path = Path(target)
    if path.suffix == ".json" or path.exists():
        bundle = read_config([path])
        if bundle.errors:
            raise BacktestRefused([*bundle.errors, f"{len(bundle.errors)} error(s); nothing backtested"], invalid)
        if len(bundle.triggers) != 1:
            raise BacktestRefused([f"{path}: holds {len(bundle.triggers)} trigger definitions; "
                                   "a backtest takes exactly one"], invalid)
        trigger = compile_definition(bundle.triggers[0][1])
    else:
        value = (await stored()).get(target)
        if value is None:
            raise BacktestRefused([f"no trigger {target!r} on {topics.definitions} (nor a file of that name)"],
                                  usage)
        try:
            trigger = compile_definition(value, key=target)
        except InvalidDefinition as exc:
            raise BacktestRefused([f"the stored definition is invalid: {'; '.join(exc.errors)}"], invalid) from None
    try:
        return backtestable(trigger)
    except NotBacktestable as exc:
        raise BacktestRefused([str(exc)], invalid) from None


async def _run(settings: Settings, topics: Topics, trigger: CompiledTrigger, start: datetime, end: datetime,
               max_events: int, as_json: bool) -> Outcome:
    """The backtest with a progress bar on stderr; Ctrl-C ends it with the partial report."""
    # The handler first: once the bar shows, Ctrl-C is the backtest's, not the worker's.
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    bar = tqdm(total=0, unit=" events", unit_scale=True, file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
               desc=f"backtest {trigger.id}")

    def total(count: int) -> None:
        bar.total = min(count, max_events) if max_events else count
        bar.refresh()

    def advanced(count: int) -> None:
        bar.update(count)

    try:
        outcome = await run_backtest(settings, topics, trigger, start, end, max_events, total,
                                     advanced, interrupted.is_set)
        # Ctrl-C after the last record was read still ends the command as interrupted.
        outcome.interrupted = outcome.interrupted or interrupted.is_set()
        return outcome
    except (KafkaError, TimeoutError) as exc:
        where = settings.kafka_bootstrap_servers
        raise BacktestRefused([f"Kafka at {where}: {type(exc).__name__}: {exc}"], 1) from None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        bar.close()


def text_report(outcome: Outcome, topics_read: list[str], max_events: int) -> str:
    r, d = outcome.report, outcome.details
    lines = [f"backtest of {r['triggerId']} from {r['from']} to {r['to']} (UTC) on {', '.join(topics_read)}"]
    if outcome.interrupted:
        lines.append(f"INTERRUPTED: a partial report, over the first {r['eventsRead']:,} events")
    if r["eventsRead"] == 0 and not outcome.interrupted:
        lines.append("no events in this range: nothing would have fired (every count below is zero)")
    lines += [
        f"  events read   {r['eventsRead']:>12,}  of {outcome.total:,} in the range"
        + (f" (stopped at --max-events {max_events:,})" if r["truncated"] else ""),
        f"  matched       {r['matched']:>12,}  (filters and conditions true)",
        f"  would fire    {r['wouldFire']:>12,}",
        f"  cooled down   {r['cooledDown']:>12,}",
        *(f"  suppressed    {count:>12,}  ({reason})" for reason, count in r["suppressed"].items()),
        f"  pending       {r['pending']:>12,}  (delayed firings due after --to: not counted as fired)",
        *([f"  delayed       {d['scheduled']:>12,}  scheduled; {d['cancelled']:,} cancelled by cancelOn, "
           f"{d['droppedAtDue']:,} no longer matching at the due time"] if d["scheduled"] else []),
        *([f"  malformed     {d['malformed']:>12,}  (a worker dead-letters them)"] if d["malformed"] else []),
        *([f"  cond. errors  {d['conditionErrors']:>12,}  (a condition failed to evaluate: false)"]
          if d["conditionErrors"] else []),
        f"  customer rows  {outcome.rows}",
        "  policies       not applied (contact policies count every trigger's firings; see docs/contract.md)",
        "per day (UTC):",
    ]
    most = max((day["firings"] for day in r["perDay"]), default=0)
    for day in r["perDay"]:
        bar = "#" * (round(BAR_WIDTH * day["firings"] / most) if most else 0)
        lines.append(f"  {day['day']}  {day['firings']:>9,}  {bar}")
    lines.append("per band: " + ", ".join(f"{band} {count:,}" for band, count in r["perBand"].items()))
    if r["samples"]:
        lines.append(f"samples (the first {len(r['samples'])} firings):")
        lines += [_sample_line(sample) for sample in r["samples"]]
    rate = r["eventsRead"] / r["seconds"] if r["seconds"] else 0.0
    lines.append(f"took {r['seconds']:.1f} s ({rate:,.0f} events/s); nothing was produced to any topic")
    return "\n".join(lines)


def _sample_line(sample: dict[str, Any]) -> str:
    return (f"  {sample.get('firedAt', '')[:23]}  customer {sample.get('customerId')}  event {sample.get('eventId')}"
            f"  firing {sample.get('firingId')}")

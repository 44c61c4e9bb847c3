"""Run the selected checks one after the other against one server and gather the report."""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable

import trio

from . import checks as _checks  # noqa: F401  (registers every check)
from .context import SuiteContext
from .options import SuiteOptions
from .outcome import Failed, Notes, Skipped
from .registry import Check, select
from .report import CheckResult, Status, SuiteReport

__all__ = ["run_protocol_suite", "run_protocol_suite_sync"]

ResultCallback = Callable[[CheckResult], None]


async def run_protocol_suite(
    url: str,
    *,
    api_key: str | None = None,
    token: str | None = None,
    content_checks: bool | None = None,
    options: SuiteOptions | None = None,
    on_result: ResultCallback | None = None,
) -> SuiteReport:
    """Run the protocol v1 conformance suite against the server at ``url``.

    Args:
        url: the session endpoint, ``ws://host:port/v1/session`` (``ws://host:port`` and
            ``http(s)://`` are accepted too).
        api_key, token, content_checks: shortcuts for the same :class:`SuiteOptions` fields.
        options: everything else (optional checks, limits, fixture, ``only`` / ``skip``).
        on_result: called with each result as soon as its check finished.

    Returns:
        The report; ``report.ok`` is False when any check failed. The suite never raises for
        what the server does.

    Raises:
        ValueError: ``only`` / ``skip`` name no check.
    """
    opts = options or SuiteOptions()
    changes: dict[str, object] = {}
    if api_key is not None:
        changes["api_key"] = api_key
    if token is not None:
        changes["token"] = token
    if content_checks is not None:
        changes["content_checks"] = content_checks
    opts = dataclasses.replace(opts, **changes)  # type: ignore[arg-type]
    chosen = select(opts.only, opts.skip)
    ctx = SuiteContext(url, opts)
    started_at = time.time()
    start = trio.current_time()
    results: list[CheckResult] = []
    for check in chosen:
        result = await _run_one(ctx, check)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return SuiteReport(
        url=url,
        started_at=started_at,
        duration_s=trio.current_time() - start,
        results=results,
        fixture=ctx.fixture_source,
    )


def run_protocol_suite_sync(url: str, **kwargs: object) -> SuiteReport:
    """:func:`run_protocol_suite` from synchronous code (it runs its own trio loop)."""

    async def main() -> SuiteReport:
        return await run_protocol_suite(url, **kwargs)  # type: ignore[arg-type]

    return trio.run(main)


async def _run_one(ctx: SuiteContext, check: Check) -> CheckResult:
    notes = Notes()
    status: Status = "passed"
    problem: str | None = None
    start = trio.current_time()
    limit = ctx.options.check_timeout_s
    with trio.move_on_after(limit) as scope:
        try:
            await check.func(ctx, notes)
        except BaseException as exc:  # classified below; cancellation is re-raised
            leaf = _leaf(exc)
            if isinstance(leaf, Failed):
                status, problem = "failed", str(leaf)
            elif isinstance(leaf, Skipped):
                status, problem = "skipped", str(leaf)
            elif isinstance(leaf, Exception):
                status = "failed"
                where = "".join(traceback.format_exception_only(type(leaf), leaf)).strip()
                problem = f"the check stopped on an unexpected error: {where}"
            else:
                raise
    if scope.cancelled_caught:
        status, problem = "failed", f"the check did not finish within {limit:g} s"
    if notes.violations:
        status = "failed"
    lines = []
    if problem:
        lines.append(problem)
    lines += notes.violations
    if status != "failed" or not lines:
        lines += notes.details
    return CheckResult(
        name=check.name,
        title=check.title,
        spec=check.spec,
        status=status,
        detail="\n".join(lines),
        duration_s=round(trio.current_time() - start, 3),
        measurements=dict(notes.measurements),
    )


def _leaf(exc: BaseException) -> BaseException:
    """The most telling exception inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_leaf(e) for e in exc.exceptions]
        for kind in (Failed, Skipped, Exception):
            for leaf in leaves:
                if isinstance(leaf, kind):
                    return leaf
        return leaves[0]
    return exc

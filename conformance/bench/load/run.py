"""Running a load: from this trio loop (:func:`run_load`), or from client processes against a
started server (:func:`run_load_benchmark`, the ``bench load`` command)."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import trio

from .._proc import rss_mib
from .._server import local_server
from .capacity import search_capacity
from .driver import FRAME_MS, LoadRun, client_process, plan, run_client
from .report import LAG_LIMIT_MS, ClientResult, LoadReport, ServerProbe
from .speech import SpeechKind, speech_utterance
from .wire import target

__all__ = ["run_load", "run_load_benchmark"]

_SERVER_CONFIG = """\
[backends]
stt = "test-stt"
llm = "test-llm"
tts = "test-tts"

[backends.options.test-llm]
reply = "Sure, here is a short answer."
"""


async def run_load(
    run: LoadRun, *, speech_label: str = "", server_pid: int | None = None
) -> LoadReport:
    """Run the load from this trio loop (one client) and report. Cancelling abandons the run
    (the sessions' sockets are closed as their scopes unwind)."""
    probe = ServerProbe(server_pid)
    clock = trio.current_time() - time.time()

    async def sample() -> None:
        await trio.sleep_until(run.window_start + clock)
        probe.at_start()
        await trio.sleep_until(run.window_end + clock)
        probe.at_end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        result = await run_client(run, range(run.sessions))
    return _report(run, [result], speech_label, probe)


def _run_processes(
    run: LoadRun,
    *,
    clients: int,
    pool: concurrent.futures.ProcessPoolExecutor,
    speech_label: str,
    server_pid: int | None,
    rss_idle: float | None,
) -> LoadReport:
    """Run the load from ``clients`` processes of ``pool``; sample the server from here."""
    probe = ServerProbe(server_pid, rss_idle)
    futures = [
        pool.submit(client_process, run, range(c, run.sessions, clients)) for c in range(clients)
    ]
    time.sleep(max(run.window_start - time.time(), 0.0))
    probe.at_start()
    time.sleep(max(run.window_end - time.time(), 0.0))
    probe.at_end()
    return _report(run, [f.result() for f in futures], speech_label, probe)


def _report(
    run: LoadRun, parts: Sequence[ClientResult], speech_label: str, probe: ServerProbe
) -> LoadReport:
    merged = ClientResult()
    for part in parts:
        merged.merge(part)
    return LoadReport(
        url=run.url,
        sessions=run.sessions,
        clients=len(parts),
        duration_s=run.duration_s,
        speech=speech_label,
        frame_ms=run.frame_ms,
        result=merged,
        client_cpu_cores=tuple(part.cpu_s / run.duration_s for part in parts),
        server=probe.usage(run.duration_s),
    )


def run_load_benchmark(
    *,
    url: str | None,
    sessions: int,
    duration_s: float,
    clients: int = 1,
    token: str | None = None,
    api_key: str | None = None,
    server_pid: int | None = None,
    speech: SpeechKind = "auto",
    frame_ms: int = FRAME_MS,
    capacity: bool = False,
    as_json: bool = False,
) -> int:
    """Run the benchmark (or the capacity search) and print its figures.

    Returns 0 when the (last) run held the lag limit without errors, else 1.
    """
    if url is not None:
        target(url, token)  # refuse a URL that is not ws:// on loopback before anything starts
    label, pcm = speech_utterance(speech)
    clients = max(1, clients)
    with (
        _maybe_server(url) as (session_url, pid),
        concurrent.futures.ProcessPoolExecutor(
            max_workers=clients, mp_context=multiprocessing.get_context("spawn")
        ) as pool,
    ):
        pid = pid or server_pid
        # Measured once, before the first run: later runs start from what earlier ones left.
        rss_idle = rss_mib(pid) if pid else None

        def measure(n: int) -> LoadReport:
            run = plan(
                session_url,
                sessions=n,
                duration_s=duration_s,
                speech=pcm,
                frame_ms=frame_ms,
                api_key=api_key,
                token=token,
                lead_s=1.0,  # the client processes' start-up
            )
            report = _run_processes(
                run,
                clients=min(clients, n),
                pool=pool,
                speech_label=label,
                server_pid=pid,
                rss_idle=rss_idle,
            )
            if as_json:
                print(json.dumps(report.to_json()), flush=True)
            else:
                print(report.format_text(), flush=True)
            return report

        if not capacity:
            return 0 if measure(sessions).ok else 1
        best = search_capacity(lambda n: measure(n).ok, sessions)
        print(
            f"capacity: {best} sessions hold p99 lag <= {LAG_LIMIT_MS:g} ms with no errors "
            f"({duration_s:g} s runs, {frame_ms} ms frames)",
            flush=True,
        )
        return 0 if best > 0 else 1


@contextmanager
def _maybe_server(url: str | None) -> Iterator[tuple[str, int | None]]:
    """(session URL, server pid): ``url`` as given (pid unknown), else a started server's."""
    if url is not None:
        yield url, None
        return
    with local_server(_SERVER_CONFIG) as server:
        yield server.session_url, server.pid

"""``scaivoice conformance protocol URL``: arguments, run, reports, exit status."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments (shared by the ``scaivoice`` CLI and anyone embedding it)."""
    parser.add_argument("url", nargs="?", help="session endpoint, ws://host:port/v1/session")
    parser.add_argument("--api-key", help="API key, sent as a Bearer header (or SCAIVOICE_API_KEY)")
    parser.add_argument("--token", help="session token, sent as ?token= (expires: prefer a key)")
    parser.add_argument("--json", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report here")
    parser.add_argument(
        "--content-checks",
        action="store_true",
        help="also check what was transcribed (needs hibari or --speech-wav with --speech-text)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="the server's idle_timeout_s: enables the idle-timeout check",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        metavar="SECONDS",
        help="the server's start_timeout_s: enables the start-timeout check",
    )
    parser.add_argument(
        "--audio-lead-ms",
        type=float,
        default=200.0,
        help="the server's audio_lead_ms, for the pacing check (default 200)",
    )
    parser.add_argument(
        "--max-frame-bytes",
        type=int,
        default=256 * 1024,
        help="the server's max_frame_bytes, for the frame size check (default 262144)",
    )
    parser.add_argument(
        "--bargein-attempts", type=int, default=5, help="interrupts measured (default 5)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for a reply or a transcript (default 60)",
    )
    parser.add_argument(
        "--no-tool-calls",
        action="store_true",
        help="the server's model cannot be driven to call a tool: skip the tool-call checks",
    )
    parser.add_argument(
        "--tool-prompt",
        metavar="TEXT",
        help="a typed turn that makes the model call the suite's get_weather tool",
    )
    parser.add_argument(
        "--parallel-tool-prompt",
        metavar="TEXT",
        help="a typed turn that makes the model call get_weather and get_time at once",
    )
    parser.add_argument(
        "--tool-timeout",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="the tool_timeout_s the timeout check sets (default 0.5)",
    )
    parser.add_argument("--speech-wav", metavar="FILE", help="speak this 16-bit WAV file instead")
    parser.add_argument("--speech-text", help="what --speech-wav says (for --content-checks)")
    parser.add_argument(
        "--synthetic-speech",
        action="store_true",
        help="speak the synthetic voiced signal even when hibari is installed",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only these checks"
    )
    parser.add_argument(
        "--skip", action="append", default=[], metavar="NAME", help="leave out these checks"
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument(
        "--verbose", action="store_true", help="also print the remarks of passed checks"
    )


def run_from_args(
    args: argparse.Namespace, *, api_key: str | None = None, out: TextIO | None = None
) -> int:
    """Run the suite as the arguments say; print progress and the summary; write the reports.

    Returns:
        0 when no check failed, 1 when one did, 2 for a usage error.
    """
    import trio

    from .client_tools import PARALLEL_TOOL_PROMPT, TOOL_PROMPT
    from .fixtures import load_speech_wav
    from .options import SuiteOptions
    from .registry import CHECKS
    from .render import human_line, human_summary, write_reports
    from .runner import run_protocol_suite

    stream = out or sys.stdout
    if args.list:
        from . import checks  # noqa: F401

        for item in CHECKS:
            print(f"{item.name:<34} {item.title}  [{item.spec}]", file=stream)
        return 0
    if not args.url:
        print("scaivoice conformance protocol: a URL is required", file=sys.stderr)
        return 2
    speech = load_speech_wav(args.speech_wav, args.speech_text) if args.speech_wav else None
    options = SuiteOptions(
        api_key=args.api_key or api_key,
        token=args.token,
        content_checks=args.content_checks,
        idle_timeout_s=args.idle_timeout,
        start_timeout_s=args.start_timeout,
        audio_lead_ms=args.audio_lead_ms,
        max_frame_bytes=args.max_frame_bytes,
        bargein_attempts=args.bargein_attempts,
        response_timeout_s=args.timeout,
        speech=speech,
        synthetic_speech=args.synthetic_speech,
        tool_calls=not args.no_tool_calls,
        tool_timeout_s=args.tool_timeout,
        tool_prompt=args.tool_prompt or TOOL_PROMPT,
        parallel_tool_prompt=args.parallel_tool_prompt or PARALLEL_TOOL_PROMPT,
        only=tuple(args.only),
        skip=tuple(args.skip),
    )

    def progress(result: object) -> None:
        if not args.quiet:
            print(human_line(result), file=stream, flush=True)  # type: ignore[arg-type]

    async def main() -> int:
        try:
            report = await run_protocol_suite(args.url, options=options, on_result=progress)
        except ValueError as exc:
            print(f"scaivoice conformance protocol: {exc}", file=sys.stderr)
            return 2
        if not args.quiet:
            print(file=stream)
        print(human_summary(report, verbose=args.verbose), file=stream)
        write_reports(report, json_path=args.json, junit_path=args.junit)
        return 0 if report.ok else 1

    return trio.run(main)

"""The ``scaivoice`` command. The only place that reads the environment.

::

    scaivoice serve [--host H] [--port P] [--config FILE] [--workers N]   run the engine
    scaivoice mcp [--config FILE] [--transport streamable-http --port P]   voice-note MCP tools
    scaivoice wyoming [--uri tcp://127.0.0.1:10300] [--config FILE]   Wyoming (Home Assistant)
    scaivoice talk FILE.wav [--url URL] [--token T] [--out reply.wav] [--json]
    scaivoice plugins                                          what was discovered
    scaivoice voices [--url URL]                               the voice library
    scaivoice keys new --tenant NAME [--role ROLE]             a new API key and its hash
    scaivoice keys create|list|revoke [--file KEYS.json]      manage the keys file
    scaivoice schema                                           protocol v1 JSON Schema
    scaivoice bench turns [--turns N]                          barge-in / overhead benchmark
    scaivoice bench stack [--turns N]                          the embedded stack's latency
    scaivoice bench load [URL] --sessions N                    concurrent sessions, capacity
    scaivoice bench wake [--minutes M]                         wake-word detections, false wakes
    scaivoice bench soak [URL] [--sessions N] [--minutes M]    long run: does anything grow
    scaivoice bench speakers [--conversations N]               diarization accuracy, embedder cost
    scaivoice bench llm [--model NAME] [--gguf FILE]           embedded models: speed, tool calls
    scaivoice bench latency [--rounds N]                       answer / barge-in latency, idle cost
    scaivoice bench turn-taking [--conversations N]            premature ends, false barge-ins
    scaivoice bench realtime [--rounds N] [--stack embedded]   /v1/realtime vs native latency
    scaivoice conformance protocol URL | backend NAME          conformance suites
    scaivoice conformance protocol URL [--api-key K] [--json F] [--junit F]   protocol v1 suite
    scaivoice conformance backend NAME [--option K=V ...] [--json]            backend contract kit

Environment: ``SCAIVOICE_CONFIG`` (config file), ``SCAIVOICE_HOST``, ``SCAIVOICE_PORT``,
``SCAIVOICE_LOG_FORMAT`` (text | json), ``SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD=1`` (built-ins only),
``SCAIVOICE_API_KEY`` (client commands), ``SCAIVOICE_DATA_DIR`` (``scaivoice mcp``'s notes),
``SCAIVOICE_WORKERS`` (``serve``'s processes).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from ._contract.backends import BackendKind
from ._contract.plugins import PluginHost
from ._errors import ConfigError, ScaiVoiceError
from ._host.auth import hash_key, new_key
from ._host.config import EngineConfig, load_config
from ._host.logs import configure_logging
from .frames import protocol_schema

__all__ = ["main"]


def _plugin_host(*, strict: bool = True) -> tuple[PluginHost, list[ScaiVoiceError]]:
    host = PluginHost()
    third_party = os.environ.get("SCAIVOICE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true")
    failures = host.load_entry_points(include_third_party=third_party, strict=strict)
    return host, list(failures)


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    path = args.config or os.environ.get("SCAIVOICE_CONFIG") or None
    overrides: dict[str, Any] = {}
    server: dict[str, Any] = {}
    host = getattr(args, "host", None) or os.environ.get("SCAIVOICE_HOST")
    port = getattr(args, "port", None)
    if port is None:  # --port 0 (any free port) is a port too
        port = os.environ.get("SCAIVOICE_PORT")
    if host:
        server["host"] = host
    if port is not None:
        server["port"] = int(port)
    if os.environ.get("SCAIVOICE_LOG_FORMAT"):
        server["log_format"] = os.environ["SCAIVOICE_LOG_FORMAT"]
    if server:
        overrides["server"] = server
    overrides.update(_gateway_environment())
    return load_config(Path(path) if path else None, overrides)


def _gateway_environment() -> dict[str, Any]:
    """The voice-gateway environment names: upstream Whisper / TTS servers, voice, switch."""
    env = os.environ
    backends: dict[str, Any] = {}
    options: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    if env.get("WHISPER_BASE_URL"):
        backends["stt"] = "openai"
        options["stt"] = {"openai": {"base_url": env["WHISPER_BASE_URL"]}}
    if env.get("TTS_BASE_URL"):
        backends["tts"] = "openai"
        options["tts"] = {"openai": {"base_url": env["TTS_BASE_URL"]}}
    if backends:
        overrides["backends"] = {**backends, "options": options}
    if env.get("TTS_VOICE"):
        overrides["defaults"] = {"voice_id": env["TTS_VOICE"]}
    if env.get("VOICE_TRANSCRIPTION_ENABLED"):
        enabled = env["VOICE_TRANSCRIPTION_ENABLED"].strip().lower() not in (
            "0",
            "false",
            "no",
            "off",
        )
        overrides["voice_notes"] = {"transcription_enabled": enabled}
    return overrides


# --------------------------------------------------------------------------- commands


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._server.service import refuse_open_exposure, serve
    from ._server.workers import WorkerPlan, default_workers, run_worker, supervise

    config = _engine_config(args)
    configure_logging(config.server.log_format)
    if args.worker_ready_fd is not None:  # a worker of `serve --workers N`
        host, _ = _plugin_host()
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        run_worker(config, host, ready_fd=args.worker_ready_fd, metrics_dir=metrics_dir)
        return 0
    workers = args.workers or _workers_of_environment() or default_workers()
    if workers == 1:
        host, _ = _plugin_host()
        trio.run(serve, config, host)
        return 0
    refuse_open_exposure(config)
    base = [sys.executable, "-m", "scaivoice.engine.cli", "serve", "--workers", "1"]
    base += ["--host", config.server.host] + (["--config", args.config] if args.config else [])

    def command(port: int, ready_fd: int) -> list[str]:
        return [*base, "--port", str(port), "--worker-ready-fd", str(ready_fd)]

    plan = WorkerPlan(
        workers=workers,
        host=config.server.host,
        port=config.server.port,
        drain_timeout_s=config.server.drain_timeout_s,
        command=command,
        env=dict(os.environ),
    )
    return trio.run(supervise, plan)


def _workers_of_environment() -> int:
    """``SCAIVOICE_WORKERS`` (0 when unset)."""
    value = os.environ.get("SCAIVOICE_WORKERS", "").strip()
    try:
        return _worker_count(value) if value else 0
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"SCAIVOICE_WORKERS: {exc}") from None


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes (1 to 1024), not {text!r}"
        )
    return int(text)


def _cmd_mcp(args: argparse.Namespace) -> int:
    from ._voicenotes.mcp_server import serve_mcp

    config = _engine_config(args)
    configure_logging(config.server.log_format)
    host, _ = _plugin_host()
    xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    data_dir = args.data_dir or os.environ.get("SCAIVOICE_DATA_DIR") or Path(xdg) / "scaivoice"
    trio.run(
        lambda: serve_mcp(
            config,
            host,
            data_dir=Path(data_dir),
            transport=args.transport,
            bind=args.mcp_host,
            port=args.mcp_port,
        )
    )
    return 0


def _cmd_wyoming(args: argparse.Namespace) -> int:
    from ._wyoming.server import serve_wyoming

    config = _engine_config(args)
    configure_logging(config.server.log_format)
    host, _ = _plugin_host()
    trio.run(
        lambda: serve_wyoming(
            config, host, uri=args.uri, allow_remote=args.allow_remote, tenant=args.tenant
        )
    )
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    host, failures = _plugin_host(strict=False)
    report: dict[str, Any] = {
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version}
            for p in host.plugins
        ],
        "backends": {},
        "features": {},
        "failures": [str(f) for f in failures],
    }
    kinds: tuple[BackendKind, ...] = ("stt", "llm", "tts", "normaliser")
    for kind in kinds:
        report["backends"][kind] = {
            name: {"description": spec.description, "capabilities": _caps(spec.capabilities)}
            for name, spec in sorted(host.backend_specs(kind).items())
        }
    for key, spec in sorted(host.feature_specs().items()):
        report["features"][spec.name] = {"config_key": key, "description": spec.description}
    report["tools"] = {
        name: {"description": spec.description, "permissions": sorted(spec.permissions)}
        for name, spec in sorted(host.tool_specs().items())
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 1 if failures else 0
    print("plugins:")
    for plugin in report["plugins"]:
        print(f"  {plugin['name']:<28} {plugin['distribution']} {plugin['version']}")
    for kind, backends in report["backends"].items():
        print(f"{kind} backends:")
        if not backends:
            print("  (none)")
        for name, info in backends.items():
            caps = ", ".join(f"{k}={v}" for k, v in info["capabilities"].items())
            print(f"  {name:<14} {info['description']}")
            if caps:
                print(f"  {'':<14} {caps}")
    print("session features:")
    if not report["features"]:
        print("  (none)")
    for name, info in report["features"].items():
        print(f"  {name:<14} enabled by {info['config_key']}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("tools (server skills):")
    if not report["tools"]:
        print("  (none)")
    for name, info in report["tools"].items():
        needs = f" (needs {', '.join(info['permissions'])})" if info["permissions"] else ""
        print(f"  {name:<14} {info['description']}{needs}")
    return 1 if failures else 0


def _caps(capabilities: object) -> dict[str, Any]:
    fields = getattr(capabilities, "__dataclass_fields__", {})
    return {name: getattr(capabilities, name) for name in fields}


def _cmd_voices(args: argparse.Namespace) -> int:
    if args.url:
        import httpx

        key = args.api_key or os.environ.get("SCAIVOICE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.get(args.url.rstrip("/") + "/v1/voices", headers=headers, timeout=10)
        response.raise_for_status()
        voices = response.json()["data"]
    else:
        voices = trio.run(_local_voices, _engine_config(args))
    if args.json:
        print(json.dumps(voices, indent=2))
    else:
        for voice in voices:
            print(
                f"{voice['id']:<32} {voice['language']:<8} {voice['sample_rate']:>6} Hz  {voice['name']}"
            )
    return 0


async def _local_voices(config: EngineConfig) -> list[dict[str, Any]]:
    from contextlib import AsyncExitStack

    from ._host.engine import _voice_library, open_voice_backends

    host, _ = _plugin_host()
    async with AsyncExitStack() as stack:
        opened = await open_voice_backends(config, host.backend_specs("tts"), stack)
        library = await _voice_library(opened)
    return [
        {
            "id": v.id,
            "name": v.voice.name,
            "language": v.voice.language,
            "sample_rate": v.voice.sample_rate,
        }
        for v in library.values()
    ]


def _new_key_id(prefix: str) -> str:
    """A fresh key id: ``<prefix>-<epoch seconds>-<random hex>`` (unique within a second too)."""
    return f"{prefix}-{int(time.time())}-{secrets.token_hex(4)}"


def _cmd_keys(args: argparse.Namespace) -> int:
    key = new_key()
    key_id = args.id or _new_key_id("key")
    print(f"API key (shown once; give it to the client): {key}", file=sys.stderr)
    print(f"[[tenants.{args.tenant}.keys]]")
    print(f'id = "{key_id}"')
    print(f'hash = "{hash_key(key)}"')
    print(f'roles = ["{args.role}"]')
    return 0


def _cmd_key_file(args: argparse.Namespace) -> int:
    from ._host.auth import create_key, read_key_file, revoke_key

    path = args.file or _engine_config(args).auth.keys_file
    if not path:
        raise ScaiVoiceError("no keys file: pass --file or set [auth] keys_file in the config")
    keys_file = Path(path)
    if args.keys_command == "create":
        key_id = args.id or _new_key_id(args.tenant)
        key = create_key(
            keys_file,
            tenant=args.tenant,
            roles=args.role or ["user"],
            key_id=key_id,
            now=time.time(),
        )
        print(
            f"created {key_id!r} for tenant {args.tenant!r}; the key (shown once):", file=sys.stderr
        )
        print(key)
        return 0
    if args.keys_command == "revoke":
        entry = revoke_key(keys_file, args.key_id, now=time.time())
        print(f"revoked {entry.id!r} of tenant {entry.tenant!r}", file=sys.stderr)
        return 0
    entries = [e for e in read_key_file(keys_file) if args.tenant in (None, e.tenant)]
    rows: list[dict[str, Any]] = [
        {
            "id": e.id,
            "tenant": e.tenant,
            "roles": list(e.roles),
            "created_at": e.created_at,
            "revoked_at": e.revoked_at,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "revoked" if row["revoked_at"] else "active"
            print(f"{row['id']:<28} {row['tenant']:<16} {','.join(row['roles']):<14} {state}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(protocol_schema(), indent=2, sort_keys=True))
    return 0


def _cmd_talk(args: argparse.Namespace) -> int:
    from ._talk import talk

    key = args.api_key or os.environ.get("SCAIVOICE_API_KEY")
    config = dict(_parse_pairs(args.set or []))
    return trio.run(
        lambda: talk(
            args.file,
            url=args.url,
            api_key=key,
            token=args.token,
            out=args.out,
            as_json=args.json,
            config=config,
            timeout_s=args.timeout,
        )
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.turns import run_turn_benchmark

    return run_turn_benchmark(turns=args.turns, url=args.url, api_key=args.api_key)


def _cmd_bench_stack(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.stack import run_stack_benchmark

    return run_stack_benchmark(
        turns=args.turns, url=args.url, api_key=args.api_key, min_silence_ms=args.min_silence_ms
    )


def _cmd_bench_wake(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.wake import run_wake_benchmark

    return run_wake_benchmark(minutes=args.minutes, voices=args.voice, as_json=args.json)


def _cmd_bench_llm(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.llm import run_llm_benchmark

    return run_llm_benchmark(
        models=args.model,
        gguf=args.gguf or (),
        conversations=args.conversations,
        requests=args.requests,
        as_json=args.json,
    )


def _cmd_bench_speakers(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.speakers import run_speaker_benchmark

    return run_speaker_benchmark(conversations=args.conversations, only=args.only or ())


def _cmd_bench_turn_taking(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.turn_taking import run_turn_taking_benchmark

    return run_turn_taking_benchmark(
        per_category=args.conversations,
        turns=args.turns,
        modes=args.mode,
        voices=args.voice,
        categories=args.category,
        url=args.url,
        api_key=args.api_key,
        as_json=args.json,
    )


def _cmd_bench_realtime(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.realtime import run_realtime_benchmark

    return run_realtime_benchmark(
        rounds=args.rounds, stack=args.stack, url=args.url, api_key=args.api_key
    )


def _cmd_bench_soak(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.soak import run_soak_benchmark

    return run_soak_benchmark(
        url=args.url,
        sessions=args.sessions,
        minutes=args.minutes,
        interval_s=args.interval,
        session_s=args.session_seconds,
        stack=args.stack,
        frame_ms=args.frame_ms,
        api_key=args.api_key or os.environ.get("SCAIVOICE_API_KEY"),
        as_json=args.json,
        server_log=Path(args.server_log) if args.server_log else None,
    )


def _cmd_bench_latency(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.latency.run import run_from_arguments

    return run_from_arguments(args)


def _cmd_bench_load(args: argparse.Namespace) -> int:
    from scaivoice.conformance.bench.load import run_load_benchmark

    return run_load_benchmark(
        url=args.url,
        sessions=args.sessions,
        duration_s=args.duration,
        clients=args.clients,
        token=args.token,
        api_key=args.api_key or os.environ.get("SCAIVOICE_API_KEY"),
        server_pid=args.server_pid,
        speech=args.speech,
        frame_ms=args.frame_ms,
        capacity=args.capacity,
        as_json=args.json,
    )


def _add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    from scaivoice.conformance.bench.latency.run import add_arguments

    add_arguments(parser)


def _add_protocol_suite_arguments(parser: argparse.ArgumentParser) -> None:
    from scaivoice.conformance.protocol_suite.cli import add_arguments

    add_arguments(parser)


def _cmd_conformance_protocol(args: argparse.Namespace) -> int:
    from scaivoice.conformance.protocol_suite.cli import run_from_args

    return run_from_args(args, api_key=os.environ.get("SCAIVOICE_API_KEY"))


def _cmd_conformance_backend(args: argparse.Namespace) -> int:
    """Run the backend contract kit against an installed backend; 1 if any check failed."""
    from scaivoice.conformance import KitConfig, check_installed_backend

    host, failures = _plugin_host(strict=False)
    for failure in failures:
        print(f"scaivoice: warning: {failure}", file=sys.stderr)
    options = dict(_parse_pairs(args.option or []))
    config = KitConfig(check_content=args.content)
    report = trio.run(
        lambda: check_installed_backend(
            host, args.name, kind=args.kind, options=options, config=config
        )
    )
    print(json.dumps(report.to_json(), indent=2) if args.json else report.format_text())
    return 0 if report.ok else 1


def _parse_pairs(pairs: Sequence[str]) -> list[tuple[str, Any]]:
    parsed = []
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        parsed.append((key, value))
    return parsed


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaivoice", description="ScaiVoice voice-bot engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the engine (WebSocket sessions + HTTP API)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8765; 0 = any free port)")
    p.add_argument("--config", help="TOML config file (or SCAIVOICE_CONFIG)")
    p.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="server processes on the port (or SCAIVOICE_WORKERS; default: one per core on Linux)",
    )
    p.add_argument("--worker-ready-fd", type=int, help=argparse.SUPPRESS)  # internal
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("mcp", help="voice-note tools for agents: an MCP server (stdio default)")
    p.add_argument("--config", help="TOML config file (or SCAIVOICE_CONFIG), as for serve")
    p.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    p.add_argument("--host", dest="mcp_host", default="127.0.0.1", help="HTTP: loopback only")
    p.add_argument("--port", dest="mcp_port", type=int, default=8766, help="HTTP: 0 = any free")
    p.add_argument("--data-dir", help="notes go to DATA_DIR/tts (or SCAIVOICE_DATA_DIR)")
    p.set_defaults(func=_cmd_mcp)

    p = sub.add_parser("wyoming", help="speech services for Home Assistant: a Wyoming server")
    p.add_argument("--uri", default="tcp://127.0.0.1:10300", help="tcp://HOST:PORT or unix://PATH")
    p.add_argument("--config", help="TOML config file (or SCAIVOICE_CONFIG), as for serve")
    p.add_argument(
        "--allow-remote", action="store_true", help="listen beyond loopback (no authentication)"
    )
    p.add_argument("--tenant", default="default", help="whose defaults apply (voice, language)")
    p.set_defaults(func=_cmd_wyoming)

    p = sub.add_parser("talk", help="run one session from a WAV file")
    p.add_argument("file", help="16-bit PCM WAV file (any rate; mono or stereo)")
    p.add_argument("--url", default="ws://127.0.0.1:8765/v1/session")
    p.add_argument("--token", help="session token")
    p.add_argument("--api-key", help="API key (or SCAIVOICE_API_KEY)")
    p.add_argument("--out", help="write the agent's reply audio to this WAV file")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="session config key")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.set_defaults(func=_cmd_talk)

    p = sub.add_parser("plugins", help="list discovered plugins, backends and features")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("voices", help="list the voice library")
    p.add_argument("--url", help="ask a running server (http://host:port) instead")
    p.add_argument("--api-key")
    p.add_argument("--config")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_voices)

    p = sub.add_parser("keys", help="API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("new", help="print a new key and the config lines holding its hash")
    k.add_argument("--tenant", required=True)
    k.add_argument("--role", default="user")
    k.add_argument("--id")
    k.set_defaults(func=_cmd_keys)
    for name, help_text in (
        ("create", "add a new key to the keys file and print it once"),
        ("list", "list the keys of the keys file (ids, tenants, roles; never the keys)"),
        ("revoke", "revoke a key of the keys file (refused from the next request on)"),
    ):
        k = keys.add_parser(name, help=help_text)
        k.add_argument("--file", help="the keys file (default: [auth] keys_file of the config)")
        k.add_argument("--config", help="TOML config file (or SCAIVOICE_CONFIG)")
        if name == "create":
            k.add_argument("--tenant", required=True)
            k.add_argument("--role", action="append", help="repeatable; default: user")
            k.add_argument("--id")
        elif name == "revoke":
            k.add_argument("key_id")
        else:
            k.add_argument("--tenant", help="only this tenant's keys")
            k.add_argument("--json", action="store_true")
        k.set_defaults(func=_cmd_key_file)

    p = sub.add_parser("schema", help="print the protocol v1 JSON Schema")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="bench_command", required=True)
    b = bench.add_parser("turns", help="barge-in latency and engine overhead on the test backends")
    b.add_argument("--turns", type=int, default=200)
    b.add_argument("--url", help="benchmark this server instead of starting one")
    b.add_argument("--api-key")
    b.set_defaults(func=_cmd_bench)
    b = bench.add_parser(
        "stack", help="end-of-speech latency, real-time factors and memory of the embedded stack"
    )
    b.add_argument("--turns", type=int, default=20)
    b.add_argument(
        "--url", help="benchmark this server instead of starting one (no memory figures)"
    )
    b.add_argument("--api-key")
    b.add_argument(
        "--min-silence-ms",
        type=int,
        help="Silero VAD hang time of the started server (default: the plugin's)",
    )
    b.set_defaults(func=_cmd_bench_stack)
    b = bench.add_parser(
        "load", help="concurrent real-time sessions with server-side VAD: lag, CPU, capacity"
    )
    b.add_argument(
        "url",
        nargs="?",
        help="ws:// session URL of a server on this machine "
        "(default: start one on the test backends)",
    )
    b.add_argument("--sessions", type=int, required=True, help="concurrent sessions")
    b.add_argument("--duration", type=float, default=20.0, help="seconds measured per run")
    b.add_argument("--token", help="session token")
    b.add_argument("--api-key", help="API key (or SCAIVOICE_API_KEY)")
    b.add_argument("--clients", type=int, default=1, help="load-generator processes")
    b.add_argument("--frame-ms", type=int, choices=[20, 50, 100], default=20)
    b.add_argument("--speech", choices=["auto", "hibari", "synthetic"], default="auto")
    b.add_argument("--server-pid", type=int, help="with URL: read this process's CPU and RSS")
    b.add_argument(
        "--capacity",
        action="store_true",
        help="search the most sessions that hold p99 lag <= 50 ms without errors",
    )
    b.add_argument("--json", action="store_true", help="print each run's report as JSON")
    b.set_defaults(func=_cmd_bench_load)
    b = bench.add_parser(
        "soak",
        help="sessions with turns, barge-ins and reconnects for a long time: does anything grow",
    )
    b.add_argument("url", nargs="?", help="ws:// session URL (default: start a server on loopback)")
    b.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    b.add_argument("--minutes", type=float, default=30.0, help="how long (bounded)")
    b.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    b.add_argument(
        "--session-seconds", type=float, default=60.0, help="a session's life before it reconnects"
    )
    b.add_argument("--stack", choices=["test", "embedded"], default="test")
    b.add_argument("--frame-ms", type=int, choices=[20, 50, 100], default=20)
    b.add_argument("--api-key", help="an admin key of the server (or SCAIVOICE_API_KEY)")
    b.add_argument("--json", action="store_true", help="print the samples and verdict as JSON")
    b.add_argument("--server-log", help="without URL: keep the started server's output here")
    b.set_defaults(func=_cmd_bench_soak)
    b = bench.add_parser(
        "wake", help="wake-word detections, false wakes per hour and CPU on generated speech"
    )
    b.add_argument(
        "--minutes", type=float, default=10.0, help="speech without a keyword (false wakes)"
    )
    b.add_argument(
        "--voice",
        action="append",
        help="backend:voice[@speed], repeatable (default: hibari, piper and espeak voices)",
    )
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.set_defaults(func=_cmd_bench_wake)
    b = bench.add_parser(
        "speakers",
        help="speaker embeddings and diarization accuracy on generated voices, CPU per session",
    )
    b.add_argument(
        "--conversations", type=int, default=20, help="generated conversations of each size"
    )
    b.add_argument("--only", action="append", help="only the sections whose title starts with this")
    b.set_defaults(func=_cmd_bench_speakers)
    b = bench.add_parser("llm", help="embedded language models: load, first token, tokens/s, tools")
    b.add_argument("--model", action="append", help="a llama-cpp model name (default: all)")
    b.add_argument("--gguf", action="append", help="also measure this GGUF file")
    b.add_argument("--conversations", type=int, default=3, help="conversations timed per model")
    b.add_argument("--requests", type=int, help="tool-call requests (default: all 12)")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.set_defaults(func=_cmd_bench_llm)
    b = bench.add_parser(
        "realtime", help="end of turn -> first audio through /v1/realtime and the native protocol"
    )
    b.add_argument("--rounds", type=int, default=20, help="turns per client")
    b.add_argument("--stack", choices=["test", "embedded"], default="test")
    b.add_argument("--url", help="http://host:port of a server to use instead of starting one")
    b.add_argument("--api-key")
    b.set_defaults(func=_cmd_bench_realtime)
    b = bench.add_parser(
        "latency", help="answer and barge-in latency against an OpenAI-compatible stub, idle cost"
    )
    _add_latency_arguments(b)
    b.set_defaults(func=_cmd_bench_latency)
    b = bench.add_parser(
        "turn-taking",
        help="premature turn ends, false and missed interruptions, latency per turn_detection",
    )
    b.add_argument("--conversations", type=int, default=5, help="conversations per category")
    b.add_argument("--turns", type=int, default=3, help="steps per conversation")
    b.add_argument(
        "--mode",
        action="append",
        choices=["semantic", "server_vad", "manual", "semantic+hold", "server_vad+hold"],
        help="turn_detection to measure (+hold: with barge_in_hold), repeatable "
        "(default: semantic, server_vad, manual, semantic+hold)",
    )
    b.add_argument(
        "--voice",
        action="append",
        help="backend:voice[@speed], repeatable (default: hibari, piper and espeak voices)",
    )
    b.add_argument(
        "--category",
        action="append",
        choices=["pauses", "questions", "backchannels", "noises", "interruptions"],
        help="conversation category to run, repeatable (default: all five)",
    )
    b.add_argument("--url", help="benchmark this server instead of starting one")
    b.add_argument("--api-key")
    b.add_argument("--json", action="store_true", help="print the figures and records as JSON")
    b.set_defaults(func=_cmd_bench_turn_taking)

    p = sub.add_parser("conformance", help="conformance suites for backends and servers")
    conformance = p.add_subparsers(dest="conformance_command", required=True)
    c = conformance.add_parser(
        "protocol", help="run the protocol v1 conformance suite against a running server"
    )
    _add_protocol_suite_arguments(c)
    c.set_defaults(func=_cmd_conformance_protocol)
    c = conformance.add_parser(
        "backend", help="check an installed backend against the backend contract"
    )
    c.add_argument("name", help="the backend's name (as in `scaivoice plugins`)")
    c.add_argument(
        "--kind",
        choices=["stt", "llm", "tts", "normaliser"],
        help="the kind, when backends of several kinds share the name",
    )
    c.add_argument(
        "--option",
        "-o",
        action="append",
        metavar="KEY=VALUE",
        help="a backend option (the value is read as JSON, else as a string); repeatable",
    )
    c.add_argument(
        "--content",
        action="store_true",
        help="STT: also check what the backend hears (needs hibari-tts for real speech)",
    )
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=_cmd_conformance_backend)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ScaiVoiceError as exc:
        print(f"scaivoice: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

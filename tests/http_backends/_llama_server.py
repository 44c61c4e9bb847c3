"""llama.cpp's OpenAI-compatible HTTP server (inside xllamacpp) on a loopback port, as a process.

    python _llama_server.py --port PORT --api-key KEY [--model qwen2.5-coder-0.5b]

Serves the embedded backend's GGUF model (joined from its PyPI part packages, sha256-checked,
nothing downloaded) on ``http://127.0.0.1:PORT/v1`` until it is terminated. It requires the API
key, and queues concurrent requests in its one slot (a new request never cuts another's stream).
"""

from __future__ import annotations

import argparse
import threading

import xllamacpp

from scaivoice.backends._llm_models import resolve_gguf
from scaivoice.backends._model_parts import default_cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    source = resolve_gguf(args.model, None, cache_dir=default_cache_dir(), backend="llama-cpp")
    params = xllamacpp.CommonParams()
    params.model.path = str(source.path)
    params.model_alias = {args.model}
    params.n_ctx = args.n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.sampling.seed = 0
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.api_keys = [args.api_key]
    params.ui = False
    params.endpoint_slots = False
    params.endpoint_metrics = True
    params.verbosity = 1
    server = xllamacpp.Server(params)
    server.handle_metrics()  # its loop serves: the HTTP side is ready too
    print(f"listening on {server.listening_address}", flush=True)
    threading.Event().wait()  # until SIGTERM ends the process


if __name__ == "__main__":
    main()

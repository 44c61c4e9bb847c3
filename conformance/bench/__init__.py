"""ScaiVoice benchmarks: figures measured through a real server, from outside the engine.

Each benchmark is a ``scaivoice bench`` command and imports the engine only through its public
API (``scaivoice.engine``, ``scaivoice.engine.client``):

- :mod:`scaivoice.conformance.bench.turns` (``bench turns``): barge-in latency and engine
  overhead on the deterministic test backends;
- :mod:`scaivoice.conformance.bench.stack` (``bench stack``): end-of-speech latency, real-time
  factors and memory of the embedded voice stack;
- :mod:`scaivoice.conformance.bench.load` (``bench load``): how many live sessions a server
  holds in real time, and the capacity search.
- :mod:`scaivoice.conformance.bench.wake` (``bench wake``): the server-side wake word's
  detections, false wakes per hour of speech and CPU cost per session, on generated speech.
- :mod:`scaivoice.conformance.bench.llm` (``bench llm``): the embedded language models' load
  time, first-token latency (cold, and the next turn with and without the KV cache), tokens/s
  and tool-call accuracy.
- :mod:`scaivoice.conformance.bench.end_of_turn` (``python -m`` it): the semantic end-of-turn
  model's scores on complete, cut-off and hesitant sentences in generated voices, and its cost
  per call.
"""

"""``python -m scaivoice.conformance.bench.latency``: the stub server alone (see :mod:`.stub`)."""

from .stub import main

main()

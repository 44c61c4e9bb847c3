"""Counts from an Autobahn|Testsuite fuzzingclient report directory (``index.json``).

Usage: ``python tests/autobahn/summarize.py REPORT_DIR [--json]``. Prints, per agent, the cases
by verdict (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED), by closing-handshake verdict,
how many connections the fuzzing client had to drop itself (the server did not close the TCP
connection after the closing handshake: "closed by client"), and the cases that were not OK.
Exit status 1 when any case FAILED.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def _case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def summarize(reports: Path) -> dict[str, Any]:
    """The counts of every agent in ``reports/index.json``."""
    index = json.loads((reports / "index.json").read_text())
    out: dict[str, Any] = {}
    for agent, cases in index.items():
        behavior: Counter[str] = Counter()
        close: Counter[str] = Counter()
        dropped_by_client = []
        not_ok: dict[str, str] = {}
        for case_id in sorted(cases, key=_case_key):
            result = cases[case_id]
            behavior[result["behavior"]] += 1
            close[result["behaviorClose"]] += 1
            if result["behavior"] != "OK" or result["behaviorClose"] not in ("OK", "INFORMATIONAL"):
                not_ok[case_id] = f"{result['behavior']} / close {result['behaviorClose']}"
            detail = json.loads((reports / result["reportfile"]).read_text())
            if detail.get("droppedByMe"):
                dropped_by_client.append(case_id)
        out[agent] = {
            "cases": sum(behavior.values()),
            "behavior": {v: behavior.get(v, 0) for v in VERDICTS},
            "close": dict(sorted(close.items())),
            "closed_by_client": len(dropped_by_client),
            "closed_by_client_cases": dropped_by_client,
            "not_ok": not_ok,
        }
    return out


def main(argv: list[str]) -> int:
    reports = Path(argv[0])
    summary = summarize(reports)
    if "--json" in argv[1:]:
        print(json.dumps(summary, indent=2))
    for agent, counts in summary.items():
        verdicts = ", ".join(f"{v} {n}" for v, n in counts["behavior"].items())
        print(f"{agent}: {counts['cases']} cases: {verdicts}")
        print(f"  closing handshake: {', '.join(f'{k} {n}' for k, n in counts['close'].items())}")
        print(f"  closed by client (the client dropped TCP): {counts['closed_by_client']}")
        for case_id, verdict in counts["not_ok"].items():
            print(f"  {case_id}: {verdict}")
    failed = any(counts["behavior"]["FAILED"] for counts in summary.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

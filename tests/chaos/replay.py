"""Check a kept soak again (CHAOS_OUT=dir when it ran), e.g. after changing the checker:

    .venv/bin/python -m tests.chaos.replay /var/tmp/soak

Prints the figures and the violations with the first one's timeline; exits 1 on a violation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.chaos import checker


def load(out: Path) -> tuple[checker.Verdict, dict]:
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    stream = [checker.StreamEvent(**e) for e in json.loads((out / "stream.json").read_text())]
    arrivals = json.loads((out / "webhooks.json").read_text())
    faults = json.loads((out / "faults.json").read_text())
    kept = json.loads((out / "verdict.json").read_text())
    leftovers = kept.get("leftovers") or {v["detail"].partition(": ")[0]: v["detail"]
                                          for v in kept["violations"] if v["rule"] == "leftovers"}
    logged = [json.loads(line) for path in out.glob("logs-*/events.jsonl*")
              for line in path.read_text().splitlines() if line.strip()]
    verdict = checker.check(records, stream, arrivals, kept["references"], faults,
                            checker.finals(records), leftovers, kept.get("max_deliveries", 3),
                            kept.get("retention_s", 15), logged)
    context = {"records": records, "stream": stream, "arrivals": arrivals, "faults": faults,
               "seed": kept["seed"]}
    return verdict, context


def main(argv: list[str]) -> int:
    verdict, context = load(Path(argv[1]))
    figures = verdict.figures
    print(f"requests={figures['requests']} accepted={figures['accepted']} availability during "
          f"faults={figures['availability_during']} between={figures['availability_between']}")
    print("\n".join(checker.table(figures)))
    for violation in verdict.violations:
        print(f"VIOLATION {violation}")
    if verdict.violations and verdict.violations[0]["job"]:
        print("\n".join(checker.timeline(verdict.violations[0]["job"], context["records"],
                                         context["stream"], context["arrivals"],
                                         context["faults"])))
    print(f"seed {context['seed']}: {len(verdict.violations)} violations")
    return 1 if verdict.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

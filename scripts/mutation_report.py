"""Score per module of the last `make mutate` run, read from mutmut's state in mutants/.

Usage: mutation_report.py [MODULE ...]   (default: every module mutmut has results for)

score = killed / (killed + survived): mutants killed by a timeout count as killed, mutants
no test executes ("no tests") as survivors; mutants not yet checked (a run cut short by
MUTATE_BUDGET) are counted apart and left out of the score.
"""

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1: "killed", 3: "killed", 36: "killed", 24: "killed", -24: "killed", 152: "killed", 255: "killed"}
SURVIVED = {0: "survived", 5: "survived", 33: "survived"}


def outcome(exit_code) -> str:
    if exit_code is None:
        return "not checked"
    return KILLED.get(exit_code) or SURVIVED.get(exit_code) or "other"


def main(modules: list[str]) -> int:
    metas = sorted((ROOT / "mutants" / "src" / "entragate").glob("*.py.meta"))
    if not metas:
        print("no mutation results: run `make mutate` first", file=sys.stderr)
        return 1
    rows, survivors = [], []
    for meta in metas:
        module = meta.name.removesuffix(".py.meta")
        if modules and module not in modules:
            continue
        results = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(outcome(code) for code in results.values())
        survivors += sorted(name for name, code in results.items() if outcome(code) == "survived")
        tried = counts["killed"] + counts["survived"]
        score = f"{100 * counts['killed'] / tried:5.1f}%" if tried else "   -  "
        rows.append((module, len(results), counts["killed"], counts["survived"], counts["not checked"], score))
    print(f"{'module':<12} {'mutants':>7} {'killed':>7} {'survived':>8} {'unchecked':>9}  score")
    for module, total, killed, survived, unchecked, score in rows:
        print(f"{module:<12} {total:>7} {killed:>7} {survived:>8} {unchecked:>9}  {score}")
    if survivors:
        print("\nsurvivors (`uv run mutmut show NAME` shows the change):")
        print("\n".join(f"  {name}" for name in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

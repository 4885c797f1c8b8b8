"""One table from ``hearfuse plan`` outputs: per task, each member alone, the paper's recipe, the best single
member and the plan's choice (test scores with their 95 % intervals), and the choice's paired differences.

    python -m benchmarks.plan_table OUT/plan-linear.json [OUT2/plan-linear.json ...] > table.md

Every number is read from the plans' JSON (what ``hearfuse plan`` computed); tasks are rows, in the order
the files and their tasks come.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hearfuse.evaluation.formatting import format_score_interval, md_escape
from hearfuse.evaluation.plan_report import difference_text

CHOICE, RECIPE, SINGLE = "chosen for the task", "the paper's recipe", "best single member"


def table(plans: list[dict]) -> str:
    members = list(dict.fromkeys(m["member"] for plan in plans for m in plan["members"]))
    alone = [f"{member} alone (mean of its states)" for member in members]
    header = ["task", *(f"{m} alone" for m in members), "paper's recipe", "best single member", "plan's choice"]
    header += ["choice − recipe", "choice − best single"]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    for plan in plans:
        for task in plan["tasks"]:
            name, metric = task["task"], task["metric"]
            rows = {r["row"]: r for r in plan["reported"] if r["task"] == name}
            cells = [f"{name} ({metric})"]
            for row in [*alone, RECIPE, SINGLE, CHOICE]:
                cells.append(_score(rows.get(row), metric, named=row in (SINGLE, CHOICE)))
            for against in (RECIPE, SINGLE):
                entry = next(
                    (
                        c
                        for c in plan["comparisons"]
                        if c["task"] == name and c["row"] == CHOICE and c["against"] == against
                    ),
                    None,
                )
                cells.append(_difference(entry))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _score(reported: dict | None, metric: str, named: bool) -> str:
    if reported is None or reported.get("status") != "ok":
        return "–"
    text = format_score_interval(reported["test"][metric]["mean"], None, metric, reported.get("interval"))
    return f"{text}<br>`{md_escape(reported['candidate'])}`" if named else text


def _difference(entry: dict | None) -> str:
    return "–" if entry is None or entry.get("difference") is None else difference_text(entry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans", nargs="+", type=Path, help="plan-<probe>.json files written by hearfuse plan")
    args = parser.parse_args()
    print(table([json.loads(path.read_text()) for path in args.plans]), end="")


if __name__ == "__main__":
    main()

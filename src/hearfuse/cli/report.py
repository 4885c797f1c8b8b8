"""``hearfuse report``: report.md and report.png rendered again from a results folder."""

from __future__ import annotations

import argparse


def add(commands) -> None:
    report = commands.add_parser(
        "report",
        help="re-render report.md and report.png from a results directory",
        description="Render the markdown table (rows = models, columns = tasks, best in bold, second underlined) "
        "and the bar chart from RESULTS/<model>/<task>.json files; runs on HEAR 2021 tasks also beside the published "
        "results (report-published.png).",
        epilog="example:\n  hearfuse report results/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("results", help="results directory written by `hearfuse evaluate`")
    report.add_argument("--out", help="where to write report.md/report.png (default: the results directory)")
    report.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import write_report

    markdown, chart = write_report(args.results, args.out)
    print(open(markdown).read())
    print(f"report: {markdown}, chart: {chart}")
    return 0

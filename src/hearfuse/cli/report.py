"""``hearfuse report``: report.md and report.png rendered again from a results folder."""

from __future__ import annotations

import argparse

from .common import baseline_option, checked_resamples, resamples_option


def add(commands) -> None:
    report = commands.add_parser(
        "report",
        help="re-render report.md and report.png from a results directory",
        description="Render the markdown table (rows = models, columns = tasks, best in bold, second underlined) "
        "and the bar chart from RESULTS/<model>/<task>.json files, with each score's 95 % interval and each model's "
        "difference to the best of each task (a paired bootstrap over the test predictions stored beside the "
        "results); runs on HEAR 2021 tasks also beside the published results (report-published.png).",
        epilog="example:\n  hearfuse report results/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("results", help="results directory written by `hearfuse evaluate`")
    report.add_argument("--out", help="where to write report.md/report.png (default: the results directory)")
    resamples_option(report)
    baseline_option(report)
    report.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import write_report

    markdown, chart = write_report(args.results, args.out, resamples=checked_resamples(args), baseline=args.baseline)
    print(open(markdown).read())
    print(f"report: {markdown}, chart: {chart}")
    return 0

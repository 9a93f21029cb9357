"""The report stage: RUN/report.html from the stored scores (reports/html.py); always rewritten,
so a report reflects the scores and the report code of the latest command."""

from __future__ import annotations

from plasticity_bench.harness.app.stages import timed
from plasticity_bench.harness.store import REPORT_FILE, RunStore


def report(store: RunStore) -> None:
    from plasticity_bench.reports.html import write_report  # matplotlib is imported only when a report is made

    timed(store, "report", lambda: write_report([store], store.root / REPORT_FILE))

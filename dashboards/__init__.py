"""Plotly figures of a study and the self-contained HTML report."""

from __future__ import annotations

from dashboards.figures import FIGURES, build_all
from dashboards.records import StudyRecord, TrialRecord, study_record
from dashboards.report import render_report, summary, write_report

__all__ = ["FIGURES", "StudyRecord", "TrialRecord", "build_all", "render_report", "study_record",
           "summary", "write_report"]

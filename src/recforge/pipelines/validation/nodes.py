"""Nodes of the `validation` pipeline: thin wrappers around `recforge.data.validation`."""

from __future__ import annotations

import pandas as pd

from recforge.data.validation import ValidationParams, check_report, validate_canonical_tables
from recforge.data.validation_report import report_to_markdown


def validate_tables(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, params: ValidationParams
) -> tuple[dict, str]:
    """The validation report as JSON and Markdown; never raises on bad data, so both are saved."""
    # Kedro hands over a validated model; a plain dict (e.g. from a bare catalog) is validated here.
    params = ValidationParams.model_validate(params)
    report = validate_canonical_tables(interactions, items, users, params)
    return report, report_to_markdown(report)


def check_validation(validation_report: dict, interactions: pd.DataFrame) -> dict:
    """Stop the run on any hard failure; otherwise the status downstream pipelines check."""
    return check_report(validation_report, interactions)

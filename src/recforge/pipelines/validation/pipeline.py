"""Validate the 03_primary tables, report to 08_reporting, then stop the run on a hard failure.

Two nodes because Kedro saves a node's outputs only after it returns: the first always returns (so
the reports are written), the second raises.
"""

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.validation.nodes import check_validation, validate_tables


def create_pipeline(**kwargs) -> Pipeline:
    """The `validation` pipeline."""
    return Pipeline(
        [
            Node(
                func=validate_tables,
                inputs=["interactions", "items", "users", "params:validation"],
                outputs=["validation_report", "validation_report_md"],
                name="validate_tables",
            ),
            Node(
                func=check_validation,
                inputs=["validation_report", "interactions"],
                outputs="validation_status",
                name="check_validation",
            ),
        ]
    )

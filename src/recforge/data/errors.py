"""Errors raised on bad input. Each names where the problem is: file, column and offending rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DataError(ValueError):
    """Input data that cannot be used as it is.

    The message always says which file (or table), which column and which rows are at fault, so
    the user can open the file and fix it.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        column: str | None = None,
        rows: Sequence[Any] | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.column = column
        self.rows = list(rows) if rows is not None else None
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(f"file/table {self.source!r}")
        if self.column:
            where.append(f"column {self.column!r}")
        msg = f"{self.problem}"
        if where:
            msg = f"{', '.join(where)}: {msg}"
        if self.rows is not None:
            shown = ", ".join(str(r) for r in self.rows[:5])
            more = f" (and {len(self.rows) - 5} more)" if len(self.rows) > 5 else ""
            msg += f" [rows: {shown}{more}]"
        if self.hint:
            msg += f". {self.hint}"
        return msg


class UnknownIdError(KeyError):
    """A raw id that the fitted IdMap has never seen."""

    def __init__(self, kind: str, ids: Sequence[Any]) -> None:
        self.kind = kind
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:5])
        more = f" (and {len(self.ids) - 5} more)" if len(self.ids) > 5 else ""
        super().__init__(f"unknown {kind} id(s) not seen in training: {shown}{more}")

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]

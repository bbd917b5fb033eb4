"""The one error base of ``hedui.connectors``."""

from __future__ import annotations

from dataclasses import dataclass

from hedui.core.errors import HeduiError


class ConnectorError(HeduiError):
    """Base of every error of the connector SDK and the reference connectors."""


@dataclass(frozen=True)
class RowProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class ImportRejected(ConnectorError):
    """A data file with errors; nothing of it was imported."""

    def __init__(self, problems: list[RowProblem], limit: int = 20) -> None:
        shown = "\n".join(f"  {p}" for p in problems[:limit])
        more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s); nothing was imported:\n{shown}{more}")
        self.problems = problems


class ImportWouldShrink(ConnectorError):
    """An import that would drop more of a connector's people than allowed (``--allow-shrink``)."""

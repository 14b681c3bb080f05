"""Which columns of a table hold the variables, the class, the weights and the process name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sbt_batch.common.config import check_keys
from sbt_batch.common.errors import UserError

DEFAULT_VARIABLES = ("dRBB", "mBB", "MET", "Mtop", "pTV")
NONE_WORDS = {"", "none", "null", "-"}


@dataclass
class Columns:
    """Column names; a weight or sample column set to None is not read (weights then count as 1)."""

    variables: list[str] = field(default_factory=lambda: list(DEFAULT_VARIABLES))
    label: str = "Class"
    training_weight: str | None = "training_weight"
    event_weight: str | None = "EventWeight"
    post_fit_weight: str | None = "post_fit_weight"
    sample: str | None = "sample"

    def __post_init__(self) -> None:
        if isinstance(self.variables, str):
            self.variables = parse_list(self.variables)
        self.variables = [str(v) for v in self.variables]
        if not self.variables:
            raise UserError("--variables: give at least one variable column")
        if len(set(self.variables)) != len(self.variables):
            raise UserError(f"--variables: duplicate column in {','.join(self.variables)}")
        if not self.label or str(self.label).lower() in NONE_WORDS:
            raise UserError("--class-column: the class column is required")
        for name in ("training_weight", "event_weight", "post_fit_weight", "sample"):
            value = getattr(self, name)
            if value is not None and str(value).strip().lower() in NONE_WORDS:
                setattr(self, name, None)

    def numeric(self) -> list[str]:
        """The numeric columns to read: variables, class and the weights that are set."""
        extra = [self.label, self.training_weight, self.event_weight, self.post_fit_weight]
        out = list(self.variables)
        for name in extra:
            if name is not None and name not in out:
                out.append(name)
        return out

    def required(self) -> list[str]:
        """Every column that must exist in an input file."""
        return self.numeric() + ([self.sample] if self.sample and self.sample not in self.numeric() else [])

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "columns") -> Columns:
        """Build from a mapping (e.g. the ``columns:`` section of a job spec), rejecting unknown keys."""
        check_keys(data, [f for f in cls.__dataclass_fields__], where)
        return cls(**data)


def parse_list(text: str | list[Any] | tuple[Any, ...] | None) -> list[str]:
    """Split a comma-separated option value (or pass a list through) into stripped items."""
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [str(t).strip() for t in text if str(t).strip()]
    return [t.strip() for t in str(text).split(",") if t.strip()]

"""A job's name, tags and note: the user's labels for finding and telling runs apart. They sit beside
the spec in a submission's body and never in it, so they never change what trains (nor what a
resumed run compares with its checkpoint's spec)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ml.specs import AuditSpec, LRFinderSpec, TrainSpec

NAME_CHARS, NOTE_CHARS = 100, 2000
TAG_CHARS, MAX_TAGS = 40, 20
LABELS = ("name", "tags", "note")
SpecT = TypeVar("SpecT", TrainSpec, LRFinderSpec)
_BREAKS = {"\n", "\r", "\t"}  # allowed in a note only


def _no_control(value: str, *, breaks: bool = False) -> str:
    bad = [c for c in value if (ord(c) < 32 or ord(c) == 127) and not (breaks and c in _BREAKS)]
    if bad:
        allowed = "tabs and line breaks only" if breaks else "none"
        raise ValueError(f"control character {bad[0]!r} not allowed ({allowed})")
    return value


def _line(value: str) -> str | None:
    return _no_control(value) or None  # empty: no name


def _text(value: str) -> str | None:
    return _no_control(value, breaks=True) or None


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))  # the first of each, in the order given


Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=NAME_CHARS), AfterValidator(_line)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=NOTE_CHARS), AfterValidator(_text)]
Tag = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_CHARS), AfterValidator(_no_control)
]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_unique)]

NAME_DESCRIPTION = f"the run's name (at most {NAME_CHARS} characters, trimmed; empty or null: none)"
TAGS_DESCRIPTION = (
    f"labels to filter by (at most {MAX_TAGS}, each 1-{TAG_CHARS} characters, trimmed, duplicates dropped)"
)
NOTE_DESCRIPTION = f"free text about the run (at most {NOTE_CHARS} characters; empty or null: none)"


class TrainJobCreate(TrainSpec):
    """POST /jobs/train: a TrainSpec, and beside it the run's optional name, tags and note."""

    name: Name | None = Field(default=None, description=NAME_DESCRIPTION)
    tags: Tags = Field(default_factory=list, description=TAGS_DESCRIPTION)
    note: Note | None = Field(default=None, description=NOTE_DESCRIPTION)


class LRFinderJobCreate(LRFinderSpec):
    """POST /jobs/lr-finder: an LRFinderSpec, and beside it the run's optional name, tags and note."""

    name: Name | None = Field(default=None, description=NAME_DESCRIPTION)
    tags: Tags = Field(default_factory=list, description=TAGS_DESCRIPTION)
    note: Note | None = Field(default=None, description=NOTE_DESCRIPTION)


class AuditJobCreate(AuditSpec):
    """POST /jobs/audit: an AuditSpec, and beside it the run's optional name, tags and note."""

    name: Name | None = Field(default=None, description=NAME_DESCRIPTION)
    tags: Tags = Field(default_factory=list, description=TAGS_DESCRIPTION)
    note: Note | None = Field(default=None, description=NOTE_DESCRIPTION)


class JobLabelsUpdate(BaseModel):
    """PATCH /jobs/{id}: any of name, tags and note; the ones given replace the job's."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "baseline, lr 0.05", "tags": ["baseline", "cifar10"]}]}
    )

    name: Name | None = Field(default=None, description=NAME_DESCRIPTION)
    tags: Tags | None = Field(default=None, description=TAGS_DESCRIPTION + "; [] or null: none")
    note: Note | None = Field(default=None, description=NOTE_DESCRIPTION)

    @model_validator(mode="after")
    def _something(self) -> JobLabelsUpdate:
        if not self.model_fields_set:
            raise ValueError(f"nothing to change: give any of {', '.join(LABELS)}")
        return self

    def values(self) -> dict[str, Any]:
        """The labels given, as the store's columns."""
        given = {name: getattr(self, name) for name in LABELS if name in self.model_fields_set}
        return given | ({"tags": given["tags"] or []} if "tags" in given else {})


def spec_of(body: BaseModel, spec_type: type[SpecT]) -> SpecT:
    """The spec alone, without the labels: what trains, what is stored as `params` and what the worker
    receives (the body's fields are validated already; its nested models are taken as they are)."""
    return spec_type.model_validate({field: getattr(body, field) for field in spec_type.model_fields})


def labels_of(body: BaseModel) -> dict[str, Any]:
    return {name: getattr(body, name) for name in LABELS}

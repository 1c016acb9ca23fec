"""What an event kind is, and the registry everything else derives from.

A kind is one module of :mod:`shared.kinds`: its data model, its checks against the
catalogue, the token of its subject (``cotn.events.<column>.<proposal>.<kind>``), which
columns of the stored ``event`` row it fills, and how it folds into stored state (a
projection, if it has one). Ingestion, the consumer, the audit trail, the metrics' labels
and the AsyncAPI document read the :class:`Registry`; nothing else names a kind, so an
event of a kind the registry does not know is refused at the door and dead-lettered by the
consumer, never folded as some other kind.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, NamedTuple, Union

import sqlalchemy as sa
from pydantic import Field, TypeAdapter, ValidationError

from shared.catalogue import Catalogue
from shared.events import MAX_EXTENSIONS, CloudEvent, extension_problem
from shared.periods import period_start
from shared.problems import Problem, problems_from_validation

Log = sa.Table | sa.CTE | sa.Subquery
"""Rows shaped like the ``event`` table: the table itself, or a CTE of some of its rows."""


class Projection(NamedTuple):
    """A projection of the log: per ``key``, the ``columns`` of the newest event of ``kind``
    (by event time, then stream sequence)."""

    table: sa.Table
    key: tuple[sa.ColumnElement[Any], ...]
    kind: str
    columns: list[sa.ColumnElement[Any]]


class EventKind:
    """One kind of event. Subclass it in a module of :mod:`shared.kinds` and register an
    instance; every method is a pure function of the event and the catalogue."""

    type: ClassVar[str]
    """The CloudEvents ``type``, e.g. ``org.cotn.milestone.v1``."""
    name: ClassVar[str]
    """The subject's last token: ``cotn.events.<column>.<proposal>.<name>``."""
    model: ClassVar[builtins.type[CloudEvent]]
    description: ClassVar[str]
    codes: ClassVar[tuple[str, ...]] = ()
    """The dead-letter reasons :meth:`check` may give, so metrics show them from zero."""

    def check(
        self, event: Any, *, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        """Every reason ``event`` cannot be filed in ``column``: unknown ids, another column's
        proposal, and (when ``authority`` is given: at the door) what the sender may not
        report. The consumer calls it with ``authority=None`` and the subject's column."""
        raise NotImplementedError

    def proposal(self, event: Any, *, catalogue: Catalogue, column: str) -> str:
        """The proposal an event that passed :meth:`check` is filed under in ``column``."""
        raise NotImplementedError

    def files_under(self, event: Any, proposal: str, catalogue: Catalogue) -> bool:
        """Whether a stored subject may file ``event`` under ``proposal``."""
        return proposal == self.proposal(
            event, catalogue=catalogue, column=catalogue.column_of[proposal]
        )

    def row(self, event: Any) -> dict[str, Any]:
        """The ``event`` table's reference columns (``milestone``, ``kpi``) it fills."""
        return {}

    def projection(self, log: Log) -> Projection | None:
        """How the kind folds into its projection table, as columns of ``log``; None for a
        kind without one."""
        return None

    def known(self, catalogue: Catalogue) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """The log columns that name a catalogue entry of this kind, and the entries the
        catalogue knows: ``cotn replay`` folds only those."""
        return (), []


def future_period_problems(period: str, time: datetime, what: str) -> list[Problem]:
    """``data.period`` refused when it begins after the event's ``time``: ``what`` (a return,
    an update) is for a period that has begun, the current one included."""
    begins = period_start(period)
    if begins <= time.astimezone(UTC).date():
        return []
    reason = (
        f"{period} begins on {begins}, after the event's time: {what} is for a period that "
        "has begun (the current one included)"
    )
    return [Problem("data.period", reason, code="future_period")]


class Refused(ValueError):
    """An object refused before its kind's model could read it: no ``type``, one the
    registry does not know, or extension attributes at fault; each with its problem."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field} {p.reason}" for p in problems))
        self.problems = problems


def _with_extensions_checked(
    obj: dict[str, Any], model: builtins.type[CloudEvent]
) -> dict[str, Any]:
    """``obj`` without extension attributes given as null (the specification's absent);
    :class:`Refused` naming each one at fault, or when there are too many."""
    names = [name for name in obj if name not in model.model_fields]
    if not names:
        return obj
    problems = [
        Problem(name, reason)
        for name in names
        if obj[name] is not None and (reason := extension_problem(name, obj[name]))
    ]
    present = [name for name in names if obj[name] is not None]
    if len(present) > MAX_EXTENSIONS:
        problems.append(
            Problem("(event)", f"has {len(present)} extension attributes, at most {MAX_EXTENSIONS}")
        )
    if problems:
        raise Refused(problems)
    return {name: value for name, value in obj.items() if value is not None or name not in names}


class Registry:
    """The kinds the product knows, by CloudEvents type and by subject token."""

    def __init__(self, kinds: Sequence[EventKind] = ()) -> None:
        self._by_type: dict[str, EventKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: EventKind) -> None:
        """Add ``kind``; its type and subject token must be new."""
        for other in self._by_type.values():
            if kind.type == other.type or kind.name == other.name:
                raise ValueError(f"kind {kind.type} ({kind.name}) clashes with {other.type}")
        self._by_type[kind.type] = kind

    def unregister(self, kind: EventKind) -> None:
        del self._by_type[kind.type]

    @contextmanager
    def added(self, kind: EventKind) -> Iterator[EventKind]:
        """``kind`` registered for the length of a block (for tests)."""
        self.register(kind)
        try:
            yield kind
        finally:
            self.unregister(kind)

    def __iter__(self) -> Iterator[EventKind]:
        return iter(list(self._by_type.values()))

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self._by_type)

    @property
    def by_type(self) -> Mapping[str, EventKind]:
        return self._by_type

    def of(self, event: CloudEvent) -> EventKind:
        """The kind of an event this registry parsed."""
        return self._by_type[event.type]

    def parse(self, obj: Any) -> CloudEvent:
        """Validate one decoded JSON object as an event of a known kind.

        Raises :class:`Refused` for a missing or unknown ``type`` or extension attributes at
        fault, and :class:`pydantic.ValidationError` for an event its kind's model refuses.
        """
        if not isinstance(obj, dict):
            CloudEvent.model_validate(obj)  # raises, naming the event: not an object
            raise AssertionError("pydantic took a non-object for an event")
        if "type" not in obj:
            raise Refused([Problem("type", "is required")])
        kind = self._by_type.get(obj["type"]) if isinstance(obj["type"], str) else None
        if kind is None:
            reason = f"must be one of {', '.join(self._by_type)}"
            raise Refused([Problem("type", reason, code="unknown_type")])
        return kind.model.model_validate(_with_extensions_checked(obj, kind.model))

    def json_schema(self, ref_template: str) -> dict[str, Any]:
        """The JSON Schema of an event of any registered kind, told apart by ``type``."""
        models = tuple(kind.model for kind in self)
        if len(models) == 1:
            return models[0].model_json_schema(ref_template=ref_template)
        union = Annotated[Union[models], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
        return TypeAdapter(union).json_schema(ref_template=ref_template)

    def problems(self, obj: Any) -> tuple[CloudEvent | None, list[Problem]]:
        """:meth:`parse` as (event, []) or (None, every problem of the object)."""
        try:
            return self.parse(obj), []
        except Refused as exc:
            return None, exc.problems
        except ValidationError as exc:
            return None, problems_from_validation(exc)

"""``org.cotn.kpi.v1``: a reporter's actual of one KPI for one period.

Filed under the first proposal of the receiving column that the KPI evidences, on
``cotn.events.<column>.<proposal>.kpi``; folds into ``kpi_observation``: per (KPI, period),
the newest report by (event time, stream sequence).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import sqlalchemy as sa
from pydantic import Field as PydanticField
from pydantic import StrictStr
from sqlmodel import Field, SQLModel

from shared.catalogue import Catalogue
from shared.events import CloudEvent, FiniteNumber, Frozen, Note, Ref
from shared.kinds.base import EventKind, Log, Projection, future_period_problems
from shared.periods import PERIOD_PATTERN, frequency_of, period_of, period_start
from shared.problems import Problem
from shared.reviews import kpi_target
from shared.tables import Id, table_of, utc

TYPE = "org.cotn.kpi.v1"


class KpiData(Frozen):
    kpi: Ref
    value: FiniteNumber
    period: Annotated[StrictStr, PydanticField(pattern=PERIOD_PATTERN)]
    unit: StrictStr | None = PydanticField(
        default=None, description="If given, must be the KPI's unit"
    )
    note: Note | None = None


class KpiEvent(CloudEvent):
    type: Literal["org.cotn.kpi.v1"]
    data: KpiData


class KpiObservationRow(SQLModel, table=True):
    """The newest report of each KPI for each period, by (event time, stream sequence)."""

    __tablename__ = "kpi_observation"

    kpi: str = Field(primary_key=True, max_length=Id)
    period: str = Field(primary_key=True, max_length=16)
    value: float
    event_time: datetime = utc()
    stream_seq: int = Field(sa_type=sa.BigInteger)
    source: str = Field(max_length=Id)
    event_id: str = Field(max_length=256)
    version: int = Field(
        default=0,
        sa_type=sa.BigInteger,
        index=True,
        description="The store's version of the commit that last wrote the row",
    )


KPI_OBSERVATION = table_of(KpiObservationRow)


class Kpis(EventKind):
    type: ClassVar[str] = TYPE
    name: ClassVar[str] = "kpi"
    model: ClassVar[builtins.type[CloudEvent]] = KpiEvent
    description: ClassVar[str] = "A KPI's actual for one period, reported by one of its reporters"
    codes: ClassVar[tuple[str, ...]] = (
        "unknown_kpi",
        "bad_subject",
        "future_period",
        "wrong_unit",
        "wrong_period",
    )

    def check(
        self, event: Any, *, catalogue: Catalogue, column: str, authority: str | None
    ) -> list[Problem]:
        data = event.data
        kpi = catalogue.kpi_by_id.get(data.kpi)
        if kpi is None:
            return [Problem("data.kpi", f"unknown KPI {data.kpi!r}", code="unknown_kpi")]
        problems = []
        columns = sorted({catalogue.column_of[p] for p in kpi.evidences})
        if column not in columns:
            problems.append(
                Problem(
                    "data.kpi",
                    f"KPI {kpi.id!r} evidences proposals of the {', '.join(columns)} column: "
                    f"post it to that column service",
                    code="bad_subject",
                )
            )
        # A policy of the door, not of the record: a stored event stays storable when the
        # catalogue's reporting frequency changes later.
        if (
            authority is not None
            and kpi.returns
            and frequency_of(data.period) != kpi.returns.frequency
        ):
            problems.append(
                Problem(
                    "data.period",
                    f"{data.period} is a {frequency_of(data.period)} period but KPI {kpi.id} is "
                    f"reported {kpi.returns.frequency} "
                    f"(e.g. {period_of(period_start(data.period), kpi.returns.frequency)})",
                    code="wrong_period",
                )
            )
        problems += future_period_problems(data.period, event.time, "a return")
        if data.unit is not None and data.unit != kpi.unit:
            problems.append(
                Problem(
                    "data.unit",
                    f"is {data.unit!r} but KPI {kpi.id} is in {kpi.unit!r}",
                    code="wrong_unit",
                )
            )
        if authority is not None and authority not in kpi.reporters:
            problems.append(Problem("data.kpi", f"{authority!r} may not report KPI {kpi.id}", 403))
        return problems

    def proposal(self, event: Any, *, catalogue: Catalogue, column: str) -> str:
        kpi = catalogue.kpi_by_id[event.data.kpi]
        return next(p for p in kpi.evidences if catalogue.column_of.get(p) == column)

    def files_under(self, event: Any, proposal: str, catalogue: Catalogue) -> bool:
        # Any proposal of the column the KPI evidences: the choice is the column service's.
        return proposal in catalogue.kpi_by_id[event.data.kpi].evidences

    def row(self, event: Any) -> dict[str, Any]:
        data = event.data
        return {
            "kpi": data.kpi,
            "period": data.period,
            "target": kpi_target(data.kpi, data.period, event.source),
        }

    def projection(self, log: Log) -> Projection:
        c = log.c
        period = c.data["period"].as_string().label("period")
        return Projection(
            KPI_OBSERVATION,
            (c.kpi, period),
            TYPE,
            [c.kpi, period, c.data["value"].as_float().label("value"),
             c.event_time, c.stream_seq, c.source, c.event_id],
        )  # fmt: skip

    def known(self, catalogue: Catalogue) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        return ("kpi",), [(k.id,) for k in catalogue.kpis]


KIND = Kpis()

"""Checks of one event against the catalogue, the sender's authority and a clock.

Pure functions: no broker, no database. A column service calls :func:`check_event` for
each event of a request: the envelope's checks here, then its kind's own
(:meth:`~shared.kinds.base.EventKind.check`). Every problem names the field and the reason,
and carries the HTTP status it deserves (403 for rights, 422 for content).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.catalogue import Catalogue
from shared.events import CloudEvent
from shared.kinds import KINDS
from shared.problems import Problem

MAX_FUTURE = timedelta(minutes=5)


def check_event(
    event: CloudEvent,
    *,
    catalogue: Catalogue,
    column: str,
    authority: str,
    now: datetime,
) -> list[Problem]:
    """Every reason this column service must refuse ``event`` from ``authority`` at ``now``."""
    problems: list[Problem] = []
    if event.source != authority:
        problems.append(
            Problem("source", f"is {event.source!r} but the token belongs to {authority!r}", 403)
        )
    if event.time > now + MAX_FUTURE:
        problems.append(Problem("time", "is more than 5 minutes in the future"))
    kind = KINDS.of(event)
    return problems + kind.check(event, catalogue=catalogue, column=column, authority=authority)

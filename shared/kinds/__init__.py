"""The kinds of event the product knows: one module each, one registry for all.

To add a kind, write a module beside these (its data model, checks, subject token, stored
references and projection; see :class:`~shared.kinds.base.EventKind`) and register it in
:data:`KINDS` below. Ingestion, the consumer, the audit trail and the generated documents
all read :data:`KINDS`.
"""

from __future__ import annotations

from shared.kinds import kpi, milestone, review, update
from shared.kinds.base import EventKind, Projection, Refused, Registry

KINDS = Registry([milestone.KIND, kpi.KIND, update.KIND, review.KIND])

__all__ = ["KINDS", "EventKind", "Projection", "Refused", "Registry"]

"""Label changes with Heketi's change types (SET, UPDATE, DELETE)."""

from __future__ import annotations

from collections.abc import Mapping

from osd.engine.shared import validation as v
from osd.engine.topology.models import ChangeLabels
from osd.enums import LabelOperation
from osd.errors import InvalidArgument


def check_label_change(change: ChangeLabels) -> dict[str, str]:
    """The labels of a change, checked: values only matter for SET and UPDATE."""
    if change.operation is None:
        raise InvalidArgument.field("operation", "is required: SET, UPDATE or DELETE")
    if change.operation is LabelOperation.DELETE:
        keys_only = {k: "" for k in change.labels}
        v.check_labels(keys_only)
        return keys_only
    return v.check_labels(change.labels)


def apply_labels(
    current: Mapping[str, str], operation: LabelOperation, labels: Mapping[str, str]
) -> dict[str, str]:
    """``current`` after a Heketi-style change; refuses a result over the label limit."""
    if operation is LabelOperation.SET:
        out = dict(labels)
    elif operation is LabelOperation.UPDATE:
        out = {**current, **labels}
    else:
        out = {k: val for k, val in current.items() if k not in labels}
    if len(out) > v.LABELS_MAX:
        raise InvalidArgument.field(
            "labels", f"the change would leave {len(out)} labels; at most {v.LABELS_MAX}"
        )
    return out

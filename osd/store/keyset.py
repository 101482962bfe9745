"""Keyset pagination: the rows after a page's last key.

A list ordered by two columns continues after (a, b) with the row-value
comparison ``(a, b) > (A, B)``, which SQLite (3.15 and later) and
PostgreSQL both take as a range of the (a, b) index: a page deep in a large
list costs what the first page costs. The spelled-out form,
``a > A OR (a = A AND b > B)``, even with the implied ``a >= A`` added,
lets them seek only to A: every row of A's group before B is read again,
and a middle page of a cluster of 100,000 volumes took 20 times as long as
its first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import tuple_
from sqlalchemy.sql.elements import ColumnElement


def after(first: Any, second: Any, key: tuple[Any, Any]) -> ColumnElement[bool]:
    """The rows after ``key`` in ascending (first, second) order."""
    # A plain tuple on the right takes each column's type, as a comparison
    # of one column does (a datetime binds as the column stores it).
    return tuple_(first, second) > tuple(key)


def before(first: Any, second: Any, key: tuple[Any, Any]) -> ColumnElement[bool]:
    """The rows after ``key`` in descending (first, second) order."""
    return tuple_(first, second) < tuple(key)

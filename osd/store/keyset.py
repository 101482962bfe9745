"""Keyset pagination: the rows after a page's last key.

A list ordered by two columns continues after (a, b) with
``a > A OR (a = A AND b > B)``. Written so, neither SQLite nor PostgreSQL
seeks the (a, b) index to A: the OR makes them scan from the start, and a
page deep in a large list costs as much as the rows before it. Adding the
implied ``a >= A`` gives the planner a range to seek, and leaves the rows
selected the same.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement


def after(first: Any, second: Any, key: tuple[Any, Any]) -> ColumnElement[bool]:
    """The rows after ``key`` in ascending (first, second) order."""
    a, b = key
    return and_(first >= a, or_(first > a, and_(first == a, second > b)))


def before(first: Any, second: Any, key: tuple[Any, Any]) -> ColumnElement[bool]:
    """The rows after ``key`` in descending (first, second) order."""
    a, b = key
    return and_(first <= a, or_(first < a, and_(first == a, second < b)))

"""Persistence: SQLAlchemy models, repositories and Alembic migrations.

Repositories are plain functions that take the session explicitly; the engine
decides where a unit of work begins and ends.
"""

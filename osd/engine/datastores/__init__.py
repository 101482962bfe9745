"""Datastores and their versions: an admin-only registry (Trove's)."""

"""Volumes: create, resize, delete, snapshots, attachments and templates,
each a phased change recovered after a crash."""

"""osd: a storage control-plane daemon."""

__version__ = "0.1.0"

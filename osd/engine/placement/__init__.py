"""Placement: where copies go. ``place`` is pure; ``rules`` says what a
volume needs; ``cluster_view`` reads the cluster it places into."""

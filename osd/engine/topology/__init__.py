"""Topology: clusters, nodes, drives, pools, maintenance, and the
availability changes they announce to whoever keeps volume state."""

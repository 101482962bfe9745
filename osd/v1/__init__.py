"""Generated from proto/osd/v1 by scripts/gen-protos. Do not edit."""

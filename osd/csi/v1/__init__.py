"""Generated from proto/csi/v1 by scripts/gen-protos. Do not edit."""

"""The CSI plugin: osd as a Container Storage Interface driver."""

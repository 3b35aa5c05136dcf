"""Drains of the ring: the disk flusher (segment files) and the NATS publisher."""

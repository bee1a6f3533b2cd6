"""zapgate.ingest."""

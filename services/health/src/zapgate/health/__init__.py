"""zapgate.health."""

"""zapgate.runtime."""

"""zapgate.contracts."""

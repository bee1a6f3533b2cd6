"""zapgate.devservers."""

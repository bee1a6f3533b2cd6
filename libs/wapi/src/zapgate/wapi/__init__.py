"""zapgate.wapi."""

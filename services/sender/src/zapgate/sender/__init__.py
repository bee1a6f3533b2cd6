"""zapgate.sender."""

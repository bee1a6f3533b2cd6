"""zapgate console: the operator pages."""

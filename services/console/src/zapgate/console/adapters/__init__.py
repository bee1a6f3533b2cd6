"""The real implementations of the console's ports."""

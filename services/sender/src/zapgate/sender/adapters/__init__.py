"""The real implementations of the sender's ports: PostgreSQL, JetStream, W-API."""

"""The real implementations of health's ports: PostgreSQL, JetStream, the operator webhook, time."""

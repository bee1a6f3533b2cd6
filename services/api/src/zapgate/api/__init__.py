"""zapgate HTTP API: REST over the sender and health NATS APIs (issue #16)."""

"""Test helpers, sample payloads and test-only secrets, kept out of the production packages."""

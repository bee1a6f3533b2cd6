"""zapgate contracts: every event, command and outcome the services exchange.

Subjects and stream names are in `zapgate.contracts.subjects`; the typed sender client is
`zapgate.contracts.client.SenderClient`. Versioning rule: libs/contracts/VERSIONING.md.
"""

"""The transactional outbox: events written with the state change, published at least once.

`store` holds the SQL (claim, deliver, retry, dead-letter, release, purge, stats),
`publishers` the destinations behind one interface, `dispatcher` the long-running loop and
`metrics` its Prometheus collectors. `settings` declares every tunable once.
"""

"""The chaos run's parts (no Django imported here): a flaky webhook receiver, the faults (kills, a
PostgreSQL restart, a probe), payers on an EVM chain and on litecoind regtest, and the checks at the end.
`run.chaos_run` puts them together; bench/chaos.py is its command line and tests/integration/test_chaos.py
its 100-payment version in the suite."""

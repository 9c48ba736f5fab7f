"""Local development chains for the demo and the tests: anvil from the npm registry, a 6-decimal test
token compiled with solc-js, and a small payer CLI. Never used by the gateway in production."""

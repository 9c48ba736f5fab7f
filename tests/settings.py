"""Settings of the test suite: the project's settings (the gateway/settings package) in the
development environment the tests opt into explicitly (generated keys, which production must set
itself, and plain http on 127.0.0.1 for the test client and the live server, as in the demo)."""

from gateway.development import development_environment_use

development_environment_use()

from gateway.settings import *  # noqa: E402, F403

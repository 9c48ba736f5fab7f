"""Settings of the test suite: the project's settings (the gateway/settings package) in the
development environment the tests opt into explicitly (generated keys, which production must set
itself, and plain http on 127.0.0.1 for the test client and the live server, as in the demo)."""

import atexit
import os
import shutil
import tempfile

from gateway.development import development_environment_use

development_environment_use()
# The run's own metrics directory, not the checkout's .state/metrics: a demo or a bench running from the
# same checkout writes there, and a test reading a counter's change would count their requests too. The
# processes a test starts with these settings inherit it and count into the same directory.
if "GATEWAY_TEST_METRICS_DIR" not in os.environ:
    os.environ["GATEWAY_TEST_METRICS_DIR"] = tempfile.mkdtemp(prefix="gateway-test-metrics-")
    atexit.register(shutil.rmtree, os.environ["GATEWAY_TEST_METRICS_DIR"], ignore_errors=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["GATEWAY_TEST_METRICS_DIR"]

from gateway.settings import *  # noqa: E402, F403

"""Which backend watches a network follows from its configuration."""

import pytest

from payments.chains.bitcoin_rpc import BitcoinCoreBackend
from payments.chains.esplora import EsploraBackend
from payments.chains.evm import EvmBackend
from payments.models import Network
from payments.scanning import backend_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("code", "rpc_url", "backend"),
    [
        ("evm-local", "http://127.0.0.1:8545", EvmBackend),
        ("litecoin-regtest", "http://user:pass@127.0.0.1:19443", BitcoinCoreBackend),
        ("bitcoin", "esplora+https://esplora.example/api", EsploraBackend),
    ],
)
def test_backend_for_network(code, rpc_url, backend):
    network = Network.objects.get(code=code)
    network.rpc_url = rpc_url
    assert isinstance(backend_for(network), backend)


def test_network_without_node_is_not_scanned():
    network = Network.objects.get(code="bitcoin")
    network.rpc_url = ""
    with pytest.raises(ValueError, match="no rpc_url"):
        backend_for(network)

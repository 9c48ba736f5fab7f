"""Shared by the scan and rescan commands: the network named on the command line and its backend."""

from django.core.management.base import CommandError

from payments.chains.base import ChainBackend
from payments.models import Network
from payments.scanning import backend_for


def network_and_backend(code: str) -> tuple[Network, ChainBackend]:
    network = Network.objects.filter(code=code).first()
    if network is None:
        raise CommandError(f"unknown network {code}")
    try:
        return network, backend_for(network)
    except (ValueError, NotImplementedError) as exc:
        raise CommandError(str(exc)) from exc

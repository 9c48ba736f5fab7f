"""A transaction named by a person (support's "attach a transaction hash"): fetched from the network's node
and, where it pays the intent's address, recorded exactly as the scanner would have recorded it. This is
how a payment made before the scanner's start height, or missed for any other reason, is found. Who may
ask is the back office's business (`support`); this module knows only the chain."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from ..chains.base import ChainBackend, ChainNodeError, TransactionNotFound
from ..errors import Conflict, GatewayError, InvalidRequest, NotFound
from ..models import ChainObservation, ChainTip, Network, PaymentIntent, Refund
from .evidence import chain_tip_record, observation_record

TX_HASH_PATTERNS = {
    "evm": re.compile(r"0x[0-9a-f]{64}"),
    "bitcoin": re.compile(r"[0-9a-f]{64}"),
    "litecoin": re.compile(r"[0-9a-f]{64}"),
}


class NodeUnavailable(GatewayError):
    code = "node_unavailable"
    http_status = 503


def attachable_networks(intent: PaymentIntent) -> list[Network]:
    """Where funds to the intent's address can be looked for: its own network, and for an EVM address
    every other enabled EVM network with a node (the same address exists on each: wrong-network funds)."""
    na = intent.network_asset
    if na is None or intent.address is None:
        return []
    own = na.network
    if own.chain != "evm":
        return [own]
    others = Network.objects.filter(chain="evm", enabled=True).exclude(rpc_url="").exclude(pk=own.pk)
    return [own, *others.order_by("name")]


def transaction_attach(
    *,
    intent: PaymentIntent,
    network_code: str,
    tx_hash: str,
    now: datetime,
    backend_for: Callable[[Network], ChainBackend] | None = None,
) -> list[ChainObservation]:
    """Fetch `tx_hash` from `network_code`'s node and record its transfers to the intent's address; the
    intent is settled by `observation_record`. Refuses, saying why: a malformed hash, a network the
    address cannot be paid on, a node that is not configured or does not answer, a transaction the node
    does not know, a transaction that pays another address."""
    if backend_for is None:
        from ..scanning import backend_for
    network = next((n for n in attachable_networks(intent) if n.code == network_code), None)
    if network is None:
        raise InvalidRequest(
            f"this payment's address cannot be paid on {network_code!r}: look for the transaction on "
            f"{', '.join(n.code for n in attachable_networks(intent)) or 'no network (no asset chosen)'}",
            code="wrong_network",
            param="network",
        )
    address = intent.address.address
    transfers = _fetched(network, tx_hash, address, now, backend_for, whose="this payment's address")
    return [o for o in (observation_record(transfer=t, now=now) for t in transfers) if o is not None]


def _fetched(
    network: Network,
    tx_hash: str,
    address: str,
    now: datetime,
    backend_for: Callable[[Network], ChainBackend],
    *,
    whose: str,
) -> list:
    """The transfers of `tx_hash` on `network` to `address`, as a scan would record them; refuses a
    malformed hash, a node missing or silent, a transaction unknown or paying another address."""
    tx_hash = (tx_hash or "").strip().lower()
    if network.chain == "evm" and not tx_hash.startswith("0x"):
        tx_hash = "0x" + tx_hash
    pattern = TX_HASH_PATTERNS.get(network.chain)
    if pattern is None or not pattern.fullmatch(tx_hash):
        shape = "0x and 64 hex digits" if network.chain == "evm" else "64 hex digits"
        raise InvalidRequest(
            f"a {network.name} transaction hash is {shape}", code="invalid_tx_hash", param="tx_hash"
        )
    if not network.rpc_url:
        raise NodeUnavailable(f"{network.name} has no node configured: the gateway cannot look it up")
    try:
        backend = backend_for(network)
        transfers = backend.transaction_transfers(tx_hash, [address], now)
        tip = None if ChainTip.objects.filter(network=network).exists() else backend.tip()
    except TransactionNotFound as exc:
        raise NotFound(
            f"{network.name}'s node does not know this transaction ({exc})", code="tx_not_found"
        ) from None
    except ChainNodeError as exc:  # its message names the node by its redacted URL only
        raise NodeUnavailable(f"{network.name}'s node did not answer: {exc}") from None
    if not transfers:
        raise Conflict(
            f"transaction {tx_hash} on {network.name} pays nothing to {whose} {address}: "
            "it pays another address (or it reverted)",
            code="tx_pays_another_address",
        )
    if tip is not None:
        # No scan has run on this network yet: its tip, so that the confirmations can be counted.
        chain_tip_record(network_code=network.code, height=tip.height, block_hash=tip.hash, now=now)
    return transfers


def refund_transaction_attach(
    *,
    refund: Refund,
    tx_hash: str,
    now: datetime,
    backend_for: Callable[[Network], ChainBackend] | None = None,
) -> Refund:
    """A transaction support names as a refund's payment (one the scanner missed: paid before the
    destination was watched, or while the scanner was down): fetched from the node and, where it pays the
    refund's destination, recorded as the scanner would; the refund is settled from it. A transfer of
    another amount is recorded and refused (the refund is not paid by it), saying so."""
    if backend_for is None:
        from ..scanning import backend_for
    if not refund.destination:
        raise Conflict("the refund has no destination yet: nothing to pay", code="refund_without_destination")
    network = refund.network_asset.network
    transfers = _fetched(
        network, tx_hash, refund.destination, now, backend_for, whose="the refund's destination"
    )
    for transfer in transfers:
        observation_record(transfer=transfer, now=now)
    refund = Refund.objects.select_related("network_asset__asset", "observation").get(pk=refund.pk)
    if refund.observation is None or refund.observation.tx_hash not in {t.tx_hash for t in transfers}:
        paid = ", ".join(str(t.amount_base_units) for t in transfers)
        raise Conflict(
            f"the transaction pays the destination {paid} base units, not the refund's "
            f"{int(refund.amount_base_units)} in {refund.network_asset.asset.code}: not accepted",
            code="tx_wrong_amount",
        )
    return refund

"""Treasury addresses: where a merchant moves its money, declared per network so that an outflow to one is
recognised as a sweep (issue 13). Declaring one redirects what the gateway calls a settlement, so the back
office makes it a dangerous action (`support.dangerous_treasury`); these are the checks and writes."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction

from .chains.address import address_normalize
from .errors import Conflict, InvalidRequest, NotFound
from .models import Merchant, Network, PaymentAddress, Settlement, TreasuryAddress
from .services.settlements import settlements_derive


def treasury_address_check(*, merchant: Merchant, network_code: str, address: str) -> tuple[Network, str]:
    """The network and the address as stored, or the reason it cannot be a treasury: not an address of
    that network, an address the gateway derived for payments (money moved there is a consolidation, not a
    settlement), or a treasury already declared (by this merchant or another)."""
    network = Network.objects.filter(code=network_code).first()
    if network is None:
        raise InvalidRequest(f"no network {network_code!r}", code="invalid_network", param="network")
    normalized = address_normalize(
        chain=network.chain,
        bech32_hrp=network.bech32_hrp,
        base58_versions=network.base58_versions,
        text=address,
    )
    if PaymentAddress.objects.filter(address=normalized).exists():
        raise Conflict(
            "that address is one the gateway derived for payments, not a treasury",
            code="address_is_a_payment_address",
        )
    taken = TreasuryAddress.objects.filter(
        network=network, address=normalized, retired_at__isnull=True
    ).first()
    if taken is not None:
        whose = "this merchant's" if taken.merchant_id == merchant.pk else "another merchant's"
        raise Conflict(f"that address is {whose} treasury on {network.code} already", code="treasury_exists")
    return network, normalized


def treasury_address_add(
    *, merchant: Merchant, network_code: str, address: str, label: str, now: datetime
) -> TreasuryAddress:
    network, normalized = treasury_address_check(
        merchant=merchant, network_code=network_code, address=address
    )
    try:
        with transaction.atomic():
            treasury = TreasuryAddress.objects.create(
                merchant=merchant,
                network=network,
                address=normalized,
                label=label.strip()[:100],
                created_at=now,
            )
            # Outflows already seen to it were unknown; now they are sweeps (their cases stay for support).
            earlier = Settlement.objects.filter(
                merchant=merchant,
                network=network,
                kind=Settlement.Kind.UNKNOWN_OUTFLOW,
                transaction__destinations__contains=[{"address": normalized}],
            ).values_list("transaction_id", flat=True)
            settlements_derive(transaction_ids=list(earlier), now=now)
            return treasury
    except IntegrityError as exc:  # declared by someone else at the same moment
        raise Conflict(
            f"that address is a treasury on {network.code} already", code="treasury_exists"
        ) from exc


def treasury_address_retire(*, merchant: Merchant, treasury_id: int, now: datetime) -> TreasuryAddress:
    """Stop treating the address as the merchant's treasury (outflows to it from now are unknown)."""
    with transaction.atomic():
        treasury = (
            TreasuryAddress.objects.select_for_update().filter(pk=treasury_id, merchant=merchant).first()
        )
        if treasury is None:
            raise NotFound("no such treasury address of this merchant", code="treasury_not_found")
        if treasury.retired_at is not None:
            raise Conflict("the treasury address is retired already", code="treasury_retired")
        treasury.retired_at = now
        treasury.save(update_fields=["retired_at"])
    return treasury

"""Declaring and retiring a merchant's treasury addresses: configuration changes, so dangerous actions
with four-eyes per the merchant's policy (`config_four_eyes`, on by default). A treasury decides which
outflows count as sweeps, so a wrong one would hide money leaving to someone else."""

from __future__ import annotations

from datetime import datetime

from payments import treasury
from payments.errors import InvalidRequest
from payments.models import Merchant, TreasuryAddress

from .approvals import DangerousAction, dangerous_action

ADD_FIELDS = {"network", "address", "label"}


def _add_check(*, merchant: Merchant, intent, payload: dict, now: datetime) -> None:
    if set(payload) != ADD_FIELDS:
        raise InvalidRequest(
            f"a treasury address has exactly {', '.join(sorted(ADD_FIELDS))}", code="invalid_treasury"
        )
    treasury.treasury_address_check(
        merchant=merchant, network_code=payload["network"], address=payload["address"]
    )


def _add_apply(*, actor, role, merchant, intent, payload, reason, now) -> dict:
    made = treasury.treasury_address_add(
        merchant=merchant,
        network_code=payload["network"],
        address=payload["address"],
        label=payload["label"],
        now=now,
    )
    return {"treasury": made.pk, "network": made.network_id, "address": made.address}


def _retire_check(*, merchant: Merchant, intent, payload: dict, now: datetime) -> None:
    if not TreasuryAddress.objects.filter(
        pk=payload.get("treasury"), merchant=merchant, retired_at__isnull=True
    ).exists():
        raise InvalidRequest("no active treasury address of this merchant", code="treasury_not_found")


def _retire_apply(*, actor, role, merchant, intent, payload, reason, now) -> dict:
    retired = treasury.treasury_address_retire(merchant=merchant, treasury_id=payload["treasury"], now=now)
    return {"treasury": retired.pk, "address": retired.address, "retired_at": retired.retired_at.isoformat()}


TREASURY_ADD = dangerous_action(
    DangerousAction(
        name="treasury.add",
        label="declare a treasury address",
        permission="payments.add_treasuryaddress",
        check=_add_check,
        apply=_add_apply,
        configuration=True,
    )
)
TREASURY_RETIRE = dangerous_action(
    DangerousAction(
        name="treasury.retire",
        label="retire a treasury address",
        permission="payments.change_treasuryaddress",
        check=_retire_check,
        apply=_retire_apply,
        configuration=True,
    )
)

"""Dangerous actions on a merchant's wallets. A new account key (added, or replacing the merchant's
active wallet for its chain and network) and reactivating a wallet both send future payments to a key,
so both are configuration changes: four-eyes per the merchant's policy (`config_four_eyes`, on by
default). Deactivating a wallet only stops deriving from it: a safe, audited admin action."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from payments import accounts
from payments.errors import Conflict, InvalidRequest, NotFound
from payments.models import Chain, Merchant, Wallet

from .approvals import DangerousAction, dangerous_action

ADD_FIELDS = {"chain", "network", "account_key", "replaces"}


def wallet_slot_network(chain: str, network_code: str | None) -> str | None:
    """The network a wallet of `chain` serves, as `wallet_add` reads it: none for EVM (every EVM
    network), the chain's own network when none is named."""
    return None if chain == Chain.EVM else (network_code or chain)


def wallet_active_in_slot(merchant: Merchant, chain: str, network_code: str | None) -> Wallet | None:
    """The merchant's active wallet for the chain and network (at most one: a database constraint)."""
    wallets = Wallet.objects.filter(merchant=merchant, chain=chain, is_active=True)
    network = wallet_slot_network(chain, network_code)
    wallets = (
        wallets.filter(network__isnull=True) if network is None else wallets.filter(network__code=network)
    )
    return wallets.select_related("network").first()


def wallet_add_payload(
    *, merchant: Merchant, chain: str, network_code: str | None, account_key: str, replace: bool
) -> dict:
    """What is asked: the key for the chain and network and, when replacing, which wallet it replaces
    (read now, so the approver approves replacing exactly that wallet)."""
    replaced = wallet_active_in_slot(merchant, chain, network_code) if replace else None
    return {
        "chain": chain,
        "network": wallet_slot_network(chain, network_code),
        "account_key": (account_key or "").strip(),
        "replaces": replaced.pk if replaced else None,
    }


def wallet_facts(wallet: Wallet | None) -> dict | None:
    if wallet is None:
        return None
    return {
        "wallet": wallet.pk,
        "chain": wallet.chain,
        "network": wallet.network.code if wallet.network_id else None,
        "account_key": wallet.account_key,
        "key_fingerprint": wallet.key_fingerprint,
        "next_index": wallet.next_index,
        "is_active": wallet.is_active,
    }


def _replaced(merchant: Merchant, payload: dict) -> Wallet | None:
    if payload["replaces"] is None:
        return None
    current = wallet_active_in_slot(merchant, payload["chain"], payload["network"])
    if current is None or current.pk != payload["replaces"]:
        raise Conflict(
            f"wallet {payload['replaces']} is no longer the merchant's active wallet for this chain and "
            "network; ask again",
            code="wallet_replaced_meanwhile",
        )
    return current


def _add_check(*, merchant: Merchant, intent, payload: dict, now: datetime) -> None:
    """`wallet_add_check` as it would run once the replaced wallet is deactivated (done in a savepoint
    that is rolled back: nothing is written)."""
    if set(payload) != ADD_FIELDS:
        raise InvalidRequest(
            f"a wallet key has exactly {', '.join(sorted(ADD_FIELDS))}", code="invalid_wallet"
        )
    replaced = _replaced(merchant, payload)
    with transaction.atomic():
        if replaced is not None:
            accounts.wallet_deactivate(wallet=replaced)
        candidate = accounts.wallet_add_check(
            merchant=merchant,
            chain=payload["chain"],
            account_key=payload["account_key"],
            network_code=payload["network"],
        )
        transaction.set_rollback(True)
    if replaced is not None and candidate.key_fingerprint == replaced.key_fingerprint:
        raise InvalidRequest(
            f"wallet {replaced.pk} derives from this key already",
            code="wallet_unchanged",
            param="account_key",
        )


def _add_apply(*, actor, role, merchant: Merchant, intent, payload: dict, reason: str, now) -> dict:
    replaced = _replaced(merchant, payload)
    before = wallet_facts(replaced)
    if replaced is not None:
        accounts.wallet_deactivate(wallet=replaced)
    wallet = accounts.wallet_add(
        merchant=merchant,
        chain=payload["chain"],
        account_key=payload["account_key"],
        network_code=payload["network"],
    )
    return {"before": {"active_wallet": before}, "wallet": wallet_facts(wallet)}


def _wallet_of(merchant: Merchant, payload: dict) -> Wallet:
    if set(payload) != {"wallet"}:
        raise InvalidRequest("a reactivation names the wallet", code="invalid_wallet")
    wallet = Wallet.objects.select_related("network").filter(pk=payload["wallet"], merchant=merchant).first()
    if wallet is None:
        raise NotFound(f"no wallet {payload['wallet']} of this merchant", code="wallet_not_found")
    return wallet


def _reactivate_check(*, merchant: Merchant, intent, payload: dict, now: datetime) -> None:
    """`wallet_reactivate`'s own checks, in a savepoint that is rolled back."""
    wallet = _wallet_of(merchant, payload)
    if wallet.is_active:
        raise Conflict(f"wallet {wallet.pk} is active already", code="wallet_active")
    with transaction.atomic():
        accounts.wallet_reactivate(wallet=wallet)
        transaction.set_rollback(True)


def _reactivate_apply(*, actor, role, merchant: Merchant, intent, payload: dict, reason: str, now) -> dict:
    wallet = _wallet_of(merchant, payload)
    before = wallet_facts(wallet)
    return {"before": before, "wallet": wallet_facts(accounts.wallet_reactivate(wallet=wallet))}


WALLET_ADD = dangerous_action(
    DangerousAction(
        name="wallet.add",
        label="add or replace a wallet key",
        permission="payments.add_wallet",
        check=_add_check,
        apply=_add_apply,
        configuration=True,
    )
)
WALLET_REACTIVATE = dangerous_action(
    DangerousAction(
        name="wallet.reactivate",
        label="reactivate a wallet",
        permission="payments.change_wallet",
        check=_reactivate_check,
        apply=_reactivate_apply,
        configuration=True,
    )
)

"""Reads: the facts `policy.evaluate` needs, and the one representation of an intent that the API and
the event snapshots share."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Max, Min, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Greatest, Least
from eth_utils import to_checksum_address as _to_checksum_address

from . import policy
from .models import (
    ChainObservation,
    ChainTip,
    Merchant,
    NetworkAsset,
    Outflow,
    PaymentIntent,
    PaymentState,
    Refund,
    Resolution,
    TreasuryAddress,
    Wallet,
)
from .models.evidence import EVM_NATIVE_OUTPUT_INDEX
from .pricing import FIAT_CURRENCIES, format_amount

INTENT_RELATED = ("network_asset__asset", "network_asset__network", "address", "quote")


def to_checksum_address(address: str) -> str:
    """EIP-55 mixed case (a keccak per address: cached, as every representation shows the address
    three times, once already checksummed: the cache is keyed by the lower-case address)."""
    return _checksummed(address.lower())


@lru_cache(maxsize=8192)
def _checksummed(address: str) -> str:
    return _to_checksum_address(address)


def shown_address(chain: str, address: str) -> str:
    """A stored address as a payer is shown it: EIP-55 checksummed for EVM, as stored otherwise."""
    return to_checksum_address(address) if chain == "evm" else address


def intent_queryset() -> QuerySet[PaymentIntent]:
    return PaymentIntent.objects.select_related(*INTENT_RELATED)


def intent_get_for_merchant(*, merchant: Merchant, intent_id: str) -> PaymentIntent | None:
    return intent_queryset().filter(merchant=merchant, pk=intent_id).first()


def intent_facts(intent: PaymentIntent, *, new: bool = False) -> policy.IntentFacts:
    """What `evaluate` knows of the intent. `new`: an intent being created in this transaction, which has
    no refunds and no observations for gas funding to explain, so neither is read (the verdict and its
    fingerprint are the same as with them read: no refund, and funders only classify observations)."""
    na = intent.network_asset
    return policy.IntentFacts(
        amount_due=int(intent.amount_due_base_units) if intent.amount_due_base_units is not None else None,
        network=na.network.code if na else None,
        token_contract=na.contract_address.lower() if na else "",
        required_confirmations=intent.required_confirmations or 0,
        expires_at=intent.expires_at,
        canceled_at=intent.canceled_at,
        underpayment_tolerance_bps=intent.underpayment_tolerance_bps,
        overpayment_tolerance_bps=intent.overpayment_tolerance_bps,
        late_payment_window=timedelta(minutes=intent.late_payment_window_minutes),
        gas_funders=frozenset() if new else gas_funders(intent),
        refunded=0 if new else refunded_amount(intent),
    )


def refunded_amount(intent: PaymentIntent) -> int:
    """What the intent's confirmed refunds have paid back."""
    if intent.pk is None or intent.network_asset_id is None:
        return 0
    rows = Refund.objects.filter(intent_id=intent.pk, state=Refund.State.CONFIRMED)
    return int(rows.aggregate(total=Sum("amount_base_units"))["total"] or 0)


def gas_funders(intent: PaymentIntent) -> frozenset[str]:
    """The merchant's treasury addresses (retired too) on a token payment's EVM network: the native coin
    they send to its address is gas funding for the sweep (`policy.GAS_FUNDING`)."""
    na = intent.network_asset
    if na is None or na.is_native or na.network.chain != "evm":
        return frozenset()
    addresses = TreasuryAddress.objects.filter(merchant_id=intent.merchant_id, network_id=na.network_id)
    return frozenset(a.lower() for a in addresses.values_list("address", flat=True))


def internal_transactions(merchant_id: str, observations: list[ChainObservation]) -> set[tuple[int, str]]:
    """(network id, tx hash) of those observations' transactions that also spent from the merchant's own
    payment addresses: consolidations, not customers' payments."""
    if not observations:
        return set()
    rows = Outflow.objects.filter(
        intent__merchant_id=merchant_id,
        network_id__in={o.network_id for o in observations},
        tx_hash__in={o.tx_hash for o in observations},
    ).values_list("network_id", "tx_hash")
    return set(rows)


def observation_facts(
    o: ChainObservation, network_code: str, *, internal: bool = False
) -> policy.ObservationFacts:
    return policy.ObservationFacts(
        network=network_code,
        tx_hash=o.tx_hash,
        output_index=o.output_index,
        token_contract=o.token_contract.lower(),
        amount=int(o.amount_base_units),
        block_height=o.block_height,
        block_hash=o.block_hash,
        position_in_block=o.position_in_block,
        block_time=o.block_time,
        seen_unconfirmed_at=o.seen_unconfirmed_at,
        canonical=o.canonical,
        sender=o.sender.lower(),
        internal=internal,
    )


def intent_evidence(
    intent: PaymentIntent,
) -> tuple[policy.IntentFacts, list[policy.ObservationFacts], list[policy.ResolutionFacts], dict[str, int]]:
    """Everything `evaluate` needs for one intent, read from the database."""
    observations = list(ChainObservation.objects.filter(intent=intent).select_related("network"))
    resolutions = [
        policy.ResolutionFacts(
            id=r.id,
            kind=r.kind,
            observation_key=(
                (r.observation.network.code, r.observation.tx_hash, r.observation.output_index)
                if r.observation_id
                else None
            ),
            until=r.until,
        )
        for r in Resolution.objects.filter(intent=intent).select_related("observation__network")
    ]
    network_ids = {o.network_id for o in observations}
    if intent.network_asset_id:
        network_ids.add(intent.network_asset.network_id)
    tips = {
        t.network.code: t.height
        for t in ChainTip.objects.filter(network_id__in=network_ids).select_related("network")
    }
    internal = internal_transactions(intent.merchant_id, observations)
    facts = [
        observation_facts(o, o.network.code, internal=(o.network_id, o.tx_hash) in internal)
        for o in observations
    ]
    return intent_facts(intent), facts, resolutions, tips


def intent_evaluate(intent: PaymentIntent, now: datetime) -> policy.Verdict:
    facts, observations, resolutions, tips = intent_evidence(intent)
    return policy.evaluate(facts, observations, resolutions, tips, now)


def _money(amount: Decimal | int | None, decimals: int | None) -> dict[str, str] | None:
    if amount is None or decimals is None:
        return None
    return {"value": format_amount(int(amount), decimals), "base_units": str(int(amount))}


def price_text(intent: PaymentIntent) -> str:
    """The price as asked: fiat with its usual decimals ("25.00"), an asset amount without trailing zeros."""
    places = FIAT_CURRENCIES.get(intent.price_currency)
    if places is not None:
        return f"{intent.price_amount.quantize(Decimal(1).scaleb(-places)):f}"
    with localcontext() as ctx:
        ctx.prec = 100
        return f"{intent.price_amount.normalize():f}"


def payment_uri(intent: PaymentIntent, amount: int | None = None) -> str | None:
    """BIP21 for Bitcoin-family, EIP-681 for EVM (native value, or ERC-20 `transfer`), for the amount
    due or another one (what is left to pay of an underpaid intent)."""
    na = intent.network_asset
    if na is None or intent.address is None or intent.amount_due_base_units is None:
        return None
    amount = int(intent.amount_due_base_units) if amount is None else amount
    return asset_payment_uri(na, display_address(intent), amount)


def asset_payment_uri(na: NetworkAsset, address: str, amount: int) -> str:
    """BIP21 or EIP-681 for `amount` base units of an asset to `address` (EVM: EIP-55 checksummed)."""
    return payment_uri_template(na, amount).replace(ADDRESS_SLOT, shown_address(na.network.chain, address))


ADDRESS_SLOT = "<address>"  # where a payment URI template takes the address; never in a URI itself


def payment_uri_template(na: NetworkAsset, amount: int) -> str:
    """`asset_payment_uri` with ADDRESS_SLOT for the address as shown (a create fills it in the statement
    that claims the address)."""
    network = na.network
    if network.chain == "evm":
        if na.is_native:
            return f"ethereum:{ADDRESS_SLOT}@{network.chain_id}?value={amount}"
        return (
            f"ethereum:{to_checksum_address(na.contract_address)}@{network.chain_id}/transfer"
            f"?address={ADDRESS_SLOT}&uint256={amount}"
        )
    return f"{network.uri_scheme}:{ADDRESS_SLOT}?amount={format_amount(amount, na.decimals)}"


def amount_remaining(intent: PaymentIntent) -> int | None:
    """What is left to pay of an underpaid intent, in base units: the amount due minus the funds counted
    for it. None in every other state (nothing more is asked for)."""
    if intent.state != PaymentState.UNDERPAID or intent.amount_due_base_units is None:
        return None
    left = int(intent.amount_due_base_units) - int(intent.amount_seen_base_units or 0)
    return left if left > 0 else None


def payment_uri_remaining(intent: PaymentIntent) -> str | None:
    """The payment URI of what is left to pay of an underpaid intent (see `amount_remaining`)."""
    remaining = amount_remaining(intent)
    return payment_uri(intent, remaining) if remaining is not None else None


def checkout_options(merchant: Merchant) -> list[NetworkAsset]:
    """The asset/network pairs a customer may choose: enabled, on an enabled network with a node (watched),
    and with an active wallet of the merchant to derive the address from (one EVM wallet serves every EVM network)."""
    wallets = list(
        Wallet.objects.filter(merchant=merchant, is_active=True).values_list("chain", "network_id")
    )
    evm = any(chain == "evm" for chain, _ in wallets)
    networks = {network_id for chain, network_id in wallets if network_id is not None}
    options = (
        NetworkAsset.objects.filter(enabled=True, network__enabled=True)
        .exclude(network__rpc_url="")
        .select_related("asset", "network")
        .order_by("network__is_testnet", "asset__code", "network__name")
    )
    return [na for na in options if (na.network.chain == "evm" and evm) or na.network_id in networks]


def payment_options(merchant: Merchant, price_currency: str) -> list[NetworkAsset]:
    """What a customer may pay an intent priced in `price_currency` with: the merchant's checkout options;
    for a price in an asset (not fiat), only that asset on its networks."""
    options = checkout_options(merchant)
    if price_currency not in FIAT_CURRENCIES:
        options = [na for na in options if na.asset.code == price_currency]
    return options


def display_address(intent: PaymentIntent) -> str | None:
    if intent.address is None:
        return None
    chain = intent.network_asset.network.chain if intent.network_asset else ""
    return shown_address(chain, intent.address.address)


def _transfer_kind(o: policy.ObservationFacts) -> str:
    """`output`: a Bitcoin-family output (`output_index` is its vout); `token_transfer`: an ERC-20
    Transfer log (`output_index` is its log index); `native`: the native value of an EVM transaction,
    which has no index (`output_index` -1)."""
    if o.token_contract:
        return "token_transfer"
    return "native" if o.output_index == EVM_NATIVE_OUTPUT_INDEX else "output"


def _known_assets(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, int]]:
    """(asset code, decimals) of the assets the gateway knows for (network code, token contract or "" for
    the native coin) pairs, the way `observation_record` recognises them."""
    if not pairs:
        return {}
    rows = NetworkAsset.objects.filter(network__code__in={network for network, _ in pairs}).values_list(
        "network__code", "contract_address", "asset__code", "decimals"
    )
    known: dict[tuple[str, str], tuple[str, int]] = {}
    for network, contract, code, decimals in rows.order_by("pk"):
        known.setdefault((network, contract.lower()), (code, decimals))
    return {pair: known[pair] for pair in pairs if pair in known}


def transactions_representation(
    intent: PaymentIntent, observations: list[policy.ObservationFacts], tips: dict[str, int]
) -> list[dict[str, Any]]:
    """The chain evidence behind the amounts: every output or transfer seen to the intent's address,
    including ones no longer canonical (replaced, dropped or reorganised away), each with the asset that
    arrived (also when it is not the intent's: a wrong asset or network) and its amount in that asset's
    decimals; an unknown token has its contract, its base units, and null asset, decimals and value."""
    na = intent.network_asset
    own = (na.network.code, na.contract_address.lower()) if na else None
    assets = {own: (na.asset.code, na.decimals)} if na else {}
    assets |= _known_assets({(o.network, o.token_contract) for o in observations} - {own})
    found = []
    for o in sorted(observations, key=lambda o: (o.first_seen_at, o.network, o.tx_hash, o.output_index)):
        height = o.block_height if o.canonical else None
        tip = tips.get(o.network)
        asset, decimals = assets.get((o.network, o.token_contract), (None, None))
        found.append(
            {
                "network": o.network,
                "tx_hash": o.tx_hash,
                "output_index": o.output_index,
                "kind": _transfer_kind(o),
                "asset": asset,
                "token_contract": o.token_contract or None,
                "amount": _money(o.amount, decimals) or {"value": None, "base_units": str(o.amount)},
                "decimals": decimals,
                "block_height": o.block_height,
                "confirmations": (tip - height + 1) if height is not None and tip is not None else 0,
                "canonical": o.canonical,
                "first_seen_at": o.first_seen_at.isoformat(),
            }
        )
    return found


def intents_transactions(intents: list[PaymentIntent]) -> dict[str, list[dict[str, Any]]]:
    """`transactions_representation` for several intents in two queries."""
    by_intent: dict[str, list[policy.ObservationFacts]] = {i.pk: [] for i in intents}
    rows = ChainObservation.objects.filter(intent__in=list(by_intent)).select_related("network")
    for o in rows:
        by_intent[o.intent_id].append(observation_facts(o, o.network.code))
    tips: dict[str, int] = {}
    networks = {f.network for facts in by_intent.values() for f in facts}
    if networks:
        tips = dict(
            ChainTip.objects.filter(network__code__in=networks).values_list("network__code", "height")
        )
    return {i.pk: transactions_representation(i, by_intent[i.pk], tips) for i in intents}


# The resolutions that move the payment window (a top-up's extension, a cancel from the back office).
WINDOW_RESOLUTIONS = (Resolution.Kind.EXTEND_DEADLINE, Resolution.Kind.CANCEL)


def effective_deadline_sql() -> models.Expression:
    """`policy.effective_deadline` as an SQL expression over an intent queryset: the expiry (or the
    merchant's cancel, if earlier), moved later by the latest top-up extension and earlier by a back-office
    cancel. Queues and sweeps filter on it, so a top-up's window counts there as it does in evaluate()."""

    def latest(kind: str, aggregate) -> Subquery:
        rows = Resolution.objects.filter(intent=OuterRef("pk"), kind=kind).values("intent")
        return Subquery(rows.annotate(at=aggregate("until")).values("at")[:1])

    own = Least("expires_at", Coalesce("canceled_at", "expires_at"))
    extended = Greatest(own, Coalesce(latest(policy.EXTEND_DEADLINE, Max), own))
    return Least(extended, Coalesce(latest(policy.CANCEL, Min), extended))


def intents_deadlines(intents: list[PaymentIntent]) -> dict[str, datetime]:
    """The effective deadline of each intent (`policy.effective_deadline`: its expiry or cancel, moved by
    the back office's window resolutions), in one query for all of them."""
    by_intent: dict[str, list[policy.ResolutionFacts]] = {i.pk: [] for i in intents}
    rows = Resolution.objects.filter(intent__in=list(by_intent), kind__in=WINDOW_RESOLUTIONS).values_list(
        "intent_id", "id", "kind", "until"
    )
    for intent_id, pk, kind, until in rows:
        by_intent[intent_id].append(policy.ResolutionFacts(id=pk, kind=kind, until=until))
    return {i.pk: policy.effective_deadline(_window_facts(i), by_intent[i.pk]) for i in intents}


def _window_facts(intent: PaymentIntent) -> policy.IntentFacts:
    """Only what the deadline depends on (intent_facts needs the asset, which a new intent lacks)."""
    return policy.IntentFacts(
        amount_due=None,
        network=None,
        token_contract="",
        required_confirmations=0,
        expires_at=intent.expires_at,
        canceled_at=intent.canceled_at,
    )


def intent_representation(
    intent: PaymentIntent,
    transactions: list[dict[str, Any]] | None = None,
    deadline: datetime | None = None,
) -> dict[str, Any]:
    """The intent as the API returns it and as event snapshots carry it (`transactions` and the effective
    `deadline` are read from the database unless the caller has them: lists batch them)."""
    if transactions is None:
        transactions = intents_transactions([intent])[intent.pk]
    if deadline is None:
        deadline = intents_deadlines([intent])[intent.pk]
    na = intent.network_asset
    decimals = na.decimals if na else None
    quote = intent.quote
    remaining = amount_remaining(intent)
    return {
        "id": intent.id,
        "object": "payment_intent",
        "state": intent.state,
        "merchant_order_id": intent.merchant_order_id,
        "customer_id": intent.customer_id,
        "price": {"amount": price_text(intent), "currency": intent.price_currency},
        "asset": na.asset.code if na else None,
        "network": na.network.code if na else None,
        "token_contract": (na.contract_address or None) if na else None,
        "address": display_address(intent),
        "amount_due": _money(intent.amount_due_base_units, decimals),
        "amount_seen": _money(intent.amount_seen_base_units, decimals) if na else None,
        "amount_confirmed": _money(intent.amount_confirmed_base_units, decimals) if na else None,
        "amount_refunded": _money(intent.amount_refunded_base_units, decimals) if na else None,
        "required_confirmations": intent.required_confirmations,
        "quote": (
            {
                "rate": f"{quote.rate.normalize():f}",
                "currency": quote.price_currency,
                "source": quote.source,
                "rate_time": quote.rate_time.isoformat(),
                "quoted_at": quote.quoted_at.isoformat(),
                "expires_at": quote.expires_at.isoformat(),
                "rounded_to_decimals": quote.rounded_to_decimals,
            }
            if quote
            else None
        ),
        "expires_at": intent.expires_at.isoformat(),
        "payment_deadline": deadline.isoformat(),
        "canceled_at": intent.canceled_at.isoformat() if intent.canceled_at else None,
        "fulfilled_at": intent.fulfilled_at.isoformat() if intent.fulfilled_at else None,
        "fulfilment_reference": intent.fulfilment_reference or None,
        "checkout_url": f"{settings.PUBLIC_BASE_URL}/pay/{intent.checkout_token}",
        "payment_uri": payment_uri(intent),
        "amount_remaining": _money(remaining, decimals),
        "payment_uri_remaining": payment_uri(intent, remaining) if remaining is not None else None,
        "success_url": intent.success_url or None,
        "cancel_url": intent.cancel_url or None,
        "metadata": intent.metadata,
        "flags": intent.flags,
        "transactions": transactions,
        "sequence": intent.event_sequence,
        "created_at": intent.created_at.isoformat(),
        "updated_at": intent.updated_at.isoformat(),
    }

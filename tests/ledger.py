"""Chain evidence recorded as a scan records it, without a node: a Litecoin-regtest payment paid by an
output, that output spent (an outflow with its destinations), and the addresses a test needs (the
wallet's change chain from the private key, an address nobody declared)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from bip_utils import Bip32Secp256k1, Bip39SeedGenerator, P2WPKHAddrEncoder
from django.utils import timezone

from gateway.csvexport import safe_cell
from payments import services
from payments.chains.base import Destination, Spend, Transfer
from payments.models import NetworkAsset, PaymentIntent, Settlement
from reconciliation.csvcopy import reconciliation_csv
from reconciliation.exports import csv_cells
from reconciliation.selectors import COLUMNS, RowFilter, reconciliation_rows
from tests.factories import TEST_MNEMONIC

NETWORK = "litecoin-regtest"

# An address nobody declared: BIP-173's P2WPKH test vector program, with the regtest HRP.
STRANGER = P2WPKHAddrEncoder.EncodeKey(
    bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"), hrp="rltc", wit_ver=0
)


def ltc_intent(merchant, amount: str = "0.5", **fields) -> PaymentIntent:
    """An intent priced in LTC on Litecoin regtest; `fields`: more of `services.IntentInput`."""
    na = NetworkAsset.objects.select_related("asset", "network").get(asset__code="LTC", network__code=NETWORK)
    data = services.IntentInput(
        price_amount=Decimal(amount), price_currency="LTC", network_asset=na, **fields
    )
    return services.payment_intent_create(merchant=merchant, data=data, now=timezone.now())


def paid(
    intent: PaymentIntent,
    tx_hash: str = "aa" * 32,
    *,
    amount: int | None = None,
    index: int = 0,
    height: int = 10,
    address: str = "",
) -> None:
    """The intent paid by one output in a block, as a scan records it (the amount due unless given; to
    another `address`: a refund's destination)."""
    now = timezone.now()
    services.observation_record(
        transfer=Transfer(
            NETWORK,
            tx_hash,
            index,
            address or intent.address.address,
            int(intent.amount_due_base_units) if amount is None else amount,
            block_height=height,
            block_hash=f"b{height}",
            block_time=now,
        ),
        now=now,
    )


def spent(
    intent: PaymentIntent,
    destinations: list[Destination],
    fee: int = 1000,
    *,
    tx_hash: str = "bb" * 32,
    spent_tx_hash: str = "aa" * 32,
    amount: int | None = None,
    height: int | None = None,
) -> Settlement:
    """The payment's output `spent_tx_hash:0` spent to `destinations` (as a scan records it: in the mempool
    unless `height`), and the settlement derived."""
    now = timezone.now()
    outflow = services.outflow_record(
        spend=Spend(
            NETWORK,
            tx_hash,
            0,
            intent.address.address,
            int(intent.amount_due_base_units) if amount is None else amount,
            spent_tx_hash=spent_tx_hash,
            spent_output_index=0,
            destinations=tuple(destinations),
            fee_base_units=fee,
            seen_unconfirmed_at=now,
            block_height=height,
            block_hash=f"b{height}" if height is not None else "",
            block_time=now if height is not None else None,
        ),
        now=now,
    )
    services.settlements_derive(transaction_ids=[outflow.transaction_id], now=now)
    return Settlement.objects.get(transaction_id=outflow.transaction_id)


def change_address(index: int) -> str:
    """The wallet's change address m/84'/1'/0'/1/index, from the private key (not the gateway's path)."""
    seed = Bip39SeedGenerator(TEST_MNEMONIC).Generate()
    key = Bip32Secp256k1.FromSeed(seed).DerivePath(f"m/84'/1'/0'/1/{index}")
    return P2WPKHAddrEncoder.EncodeKey(key.PublicKey().RawCompressed().ToBytes(), hrp="rltc", wit_ver=0)


def reconciled(merchant) -> dict[str, dict]:
    """The merchant's reconciliation rows by payment id, once the CSV PostgreSQL writes for them
    (`reconciliation.csvcopy`) is checked to hold, read back with the csv module, cell for cell what the
    Python rows say (lists joined by a space, formulas made inert): every flow a test builds checks both."""
    f = RowFilter(merchant_ids=(merchant.pk,))
    rows = list(reconciliation_rows(f))
    body = b"".join(reconciliation_csv(f)).decode()
    parsed = list(csv.reader(io.StringIO(body, newline="")))
    assert parsed[0] == list(COLUMNS)
    expected = [[safe_cell(cell) for cell in csv_cells(row)] for row in rows]
    for got, want in zip(parsed[1:], expected, strict=True):
        assert dict(zip(COLUMNS, got, strict=True)) == dict(zip(COLUMNS, want, strict=True))
    return {row["payment_id"]: row for row in rows}

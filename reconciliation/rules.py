"""How one order reconciles: a pure function of the amounts its evidence gives (no database, no clock), so
the same facts always give the same status, in the export, the reports and a test.

Amounts are integers in the payment asset's base units. The statuses, most urgent first:

- `chain_mismatch`: the last re-verification found the stored evidence differs from the chain;
- `unattributed_funds`: money the order cannot account for: moved to an address nobody declared, received
  but neither counted to the order nor refunded (late, after a cancel, a top-up of an expired payment), or
  another asset sent to the payment's address;
- `refund_pending`: a refund is open (requested, awaiting the merchant's payment, confirming);
- `awaiting_settlement`: the payment is still open, or everything it received is still on its address;
- `partially_settled`: part of it was moved on (swept, consolidated, refunded from the address);
- `reconciled`: every unit received is accounted for and none is left on the payment's address (or nothing
  was ever received).
"""

from __future__ import annotations

from dataclasses import dataclass

from payments.pricing import format_amount

RECONCILED = "reconciled"
AWAITING_SETTLEMENT = "awaiting_settlement"
PARTIALLY_SETTLED = "partially_settled"
REFUND_PENDING = "refund_pending"
CHAIN_MISMATCH = "chain_mismatch"
UNATTRIBUTED_FUNDS = "unattributed_funds"
STATUSES = (
    RECONCILED,
    AWAITING_SETTLEMENT,
    PARTIALLY_SETTLED,
    REFUND_PENDING,
    CHAIN_MISMATCH,
    UNATTRIBUTED_FUNDS,
)

# The payment's states in which what it counted is the merchant's for the order.
KEPT_STATES = frozenset({"paid", "overpaid", "refunded"})
# The states in which the payment may still change with the customer's next transfer or confirmation.
OPEN_STATES = frozenset({"created", "awaiting_payment", "detected", "confirming"})


@dataclass(frozen=True)
class OrderFacts:
    state: str
    received: int  # in blocks, canonical, in the payment's asset, not the merchant's own money moved there
    counted: int  # counted to the order by its rules and confirmed
    refunded: int  # confirmed refunds
    refunds_open: int  # how many refunds are open
    on_address: int  # still on the payment's address in its asset: every canonical credit minus every debit
    moved_unknown: int = 0  # moved by a settlement to an undeclared address
    other_assets: int = 0  # transfers of another asset to the payment's address (not gas funding)
    mismatch: str = ""  # what the last re-verification found wrong, if anything
    decimals: int = 0  # the asset's, to say amounts in its units
    unit: str = ""  # the asset's code

    def says(self, amount: int) -> str:
        """An amount as people read it: `0.50000000 LTC` (exact: a token's uint256 has 78 digits)."""
        return f"{format_amount(amount, self.decimals)} {self.unit}".strip()


@dataclass(frozen=True)
class Reconciliation:
    status: str
    reason: str


def reconcile(f: OrderFacts) -> Reconciliation:
    if f.mismatch:
        return Reconciliation(CHAIN_MISMATCH, f.mismatch)
    if f.moved_unknown > 0:
        return Reconciliation(
            UNATTRIBUTED_FUNDS, f"{f.says(f.moved_unknown)} moved to an address nobody declared"
        )
    if f.refunds_open > 0:
        return Reconciliation(REFUND_PENDING, f"{f.refunds_open} refund(s) open")
    if f.state in OPEN_STATES:
        return Reconciliation(AWAITING_SETTLEMENT, f"the payment is still open ({f.state})")
    kept = f.counted if f.state in KEPT_STATES else 0
    unaccounted = f.received - kept - f.refunded
    if unaccounted > 0:
        return Reconciliation(
            UNATTRIBUTED_FUNDS,
            f"{f.says(unaccounted)} received but neither counted to the order nor refunded",
        )
    if f.other_assets > 0:
        return Reconciliation(
            UNATTRIBUTED_FUNDS, f"{f.other_assets} transfer(s) of another asset to the payment's address"
        )
    if f.on_address <= 0:
        return Reconciliation(RECONCILED, "nothing received" if f.received == 0 else "received and moved on")
    if f.on_address >= f.received:
        return Reconciliation(AWAITING_SETTLEMENT, f"{f.says(f.on_address)} still on the payment's address")
    return Reconciliation(
        PARTIALLY_SETTLED, f"{f.says(f.on_address)} of {f.says(f.received)} still on the payment's address"
    )

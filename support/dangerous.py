"""The dangerous actions (docs/SUPPORT.md, "Dangerous actions"): decisions on a payment, recorded as
resolutions that `evaluate()` reads (never a state write), and changes to a merchant's policy. Each is
checked when submitted and again when applied; `support.approvals` decides who and how many people."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.utils import timezone

from payments import services
from payments.errors import InvalidRequest
from payments.models import Merchant, PaymentIntent, Resolution

from .approvals import DangerousAction, dangerous_action
from .models import MerchantPolicy

DECIDE_PAYMENT = "support.decide_payment"
CHANGE_POLICY = "support.change_merchantpolicy"


def _resolution_check(kind: str):
    def check(*, merchant: Merchant, intent: PaymentIntent | None, payload: dict, now: datetime) -> None:
        if intent is None or intent.merchant_id != merchant.pk:
            raise InvalidRequest("a decision on a payment names the payment", code="parameter_missing")
        services.resolution_check(
            intent=intent, kind=kind, now=now, observation_id=payload.get("observation_id")
        )

    return check


def _resolution_apply(kind: str):
    def apply(*, actor, role, merchant, intent, payload, reason, now) -> dict:
        before = PaymentIntent.objects.values_list("state", flat=True).get(pk=intent.pk)
        made = services.resolution_record(
            intent_id=intent.pk,
            kind=kind,
            actor=actor,
            role=role,
            reason=reason,
            now=now,
            observation_id=payload.get("observation_id"),
        )
        after = PaymentIntent.objects.values_list("state", flat=True).get(pk=intent.pk)
        return {"before": {"state": before}, "state": after, "resolutions": [r.pk for r in made]}

    return apply


for kind, label in (
    (Resolution.Kind.ACCEPT_LATE_PAYMENT, "accept a late payment"),
    (Resolution.Kind.ACCEPT_UNDERPAYMENT, "accept an underpayment"),
    (Resolution.Kind.MARK_PAID, "mark a payment paid"),
    (Resolution.Kind.CANCEL, "cancel an unpaid payment"),
):
    dangerous_action(
        DangerousAction(
            name=f"payment.{kind}",
            label=label,
            permission=DECIDE_PAYMENT,
            check=_resolution_check(kind),
            apply=_resolution_apply(kind),
        )
    )


MAX_THRESHOLD = Decimal(10) ** 22  # the column is NUMERIC(40, 18)
POLICY_FIELDS = ("four_eyes", "threshold_amount", "threshold_currency", "config_four_eyes")


def policy_payload(
    *, four_eyes: str, threshold_amount: Decimal | None, threshold_currency: str, config_four_eyes: bool
) -> dict:
    """The policy as a request's payload (JSON: the amount as a string)."""
    return {
        "four_eyes": four_eyes,
        "threshold_amount": None if threshold_amount is None else f"{threshold_amount.normalize():f}",
        "threshold_currency": threshold_currency.strip().upper(),
        "config_four_eyes": bool(config_four_eyes),
    }


def policy_of(merchant: Merchant) -> dict:
    """The merchant's policy as a payload; the default (four-eyes always) when none is stored."""
    stored = MerchantPolicy.objects.filter(merchant=merchant).first()
    if stored is None:
        return policy_payload(
            four_eyes=MerchantPolicy.FourEyes.ALWAYS,
            threshold_amount=None,
            threshold_currency="",
            config_four_eyes=True,
        )
    return policy_payload(
        four_eyes=stored.four_eyes,
        threshold_amount=stored.threshold_amount,
        threshold_currency=stored.threshold_currency,
        config_four_eyes=stored.config_four_eyes,
    )


def _policy_check(*, merchant: Merchant, intent, payload: dict, now: datetime) -> None:
    if set(payload) != set(POLICY_FIELDS):
        raise InvalidRequest(f"a policy has exactly {', '.join(POLICY_FIELDS)}", code="invalid_policy")
    if payload["four_eyes"] not in MerchantPolicy.FourEyes.values:
        raise InvalidRequest(
            f"four_eyes is one of {', '.join(MerchantPolicy.FourEyes.values)}",
            code="invalid_policy",
            param="four_eyes",
        )
    if payload["four_eyes"] == MerchantPolicy.FourEyes.ABOVE_AMOUNT:
        try:
            amount = Decimal(payload["threshold_amount"] or "")
        except InvalidOperation as exc:
            raise InvalidRequest(
                "give the amount above which two people decide",
                code="invalid_policy",
                param="threshold_amount",
            ) from exc
        if not amount.is_finite() or amount < 0 or not payload["threshold_currency"]:
            raise InvalidRequest(
                "give a non-negative amount and its currency", code="invalid_policy", param="threshold_amount"
            )
        if amount >= MAX_THRESHOLD or -amount.as_tuple().exponent > 18:
            raise InvalidRequest(
                "the amount has at most 22 digits before the point and 18 after",
                code="invalid_policy",
                param="threshold_amount",
            )
    if len(payload["threshold_currency"]) > 12:
        raise InvalidRequest("a currency code has at most 12 characters", code="invalid_policy")
    if payload == policy_of(merchant):
        raise InvalidRequest("the policy is already so", code="policy_unchanged")


def _policy_apply(*, actor, role, merchant, intent, payload, reason, now) -> dict:
    before = policy_of(merchant)
    amount = payload["threshold_amount"]
    MerchantPolicy.objects.update_or_create(
        merchant=merchant,
        defaults={
            "four_eyes": payload["four_eyes"],
            "threshold_amount": Decimal(amount) if amount is not None else None,
            "threshold_currency": payload["threshold_currency"],
            "config_four_eyes": payload["config_four_eyes"],
            "updated_at": now or timezone.now(),
        },
    )
    return {"before": before, "policy": policy_of(merchant)}


POLICY_SET = dangerous_action(
    DangerousAction(
        name="merchant.policy_set",
        label="change the merchant's policy",
        permission=CHANGE_POLICY,
        check=_policy_check,
        apply=_policy_apply,
        configuration=True,
    )
)


from . import dangerous_refunds, dangerous_treasury, dangerous_wallets  # noqa: E402, F401 (register their actions)

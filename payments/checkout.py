"""The customer's checkout page, `/pay/<token>` (the token is not the API id): it shows what the backend
knows and nothing more. Choosing the asset is the only write, through the same service as the API.

- `GET  /pay/<token>`              the page (server-rendered; static files served by the app)
- `POST /pay/<token>/select`       choose an asset/network for an intent in `created`
- `GET  /pay/<token>/status`       a small JSON document the page polls
- `GET  /pay/<token>/qr.svg`       the QR code of the payment URI (`?remaining=1`: of what is left to pay)
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import segno
from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import services
from .errors import GatewayError
from .models import PaymentIntent, PaymentState
from .pricing import format_amount_for_display
from .ratelimit import limited
from .selectors import (
    amount_remaining,
    display_address,
    intent_queryset,
    intents_deadlines,
    intents_transactions,
    payment_options,
    payment_uri,
    payment_uri_remaining,
    price_text,
)

S = PaymentState


def _intent(token: str) -> PaymentIntent:
    intent = intent_queryset().select_related("merchant").filter(checkout_token=token).first()
    if intent is None:
        raise Http404("no such payment")
    return intent


def _confirmations(intent: PaymentIntent) -> int:
    """Confirmations of the least-confirmed canonical transaction counted for the intent."""
    na = intent.network_asset
    if na is None:
        return 0
    contract = na.contract_address.lower()
    txs = [
        t
        for t in intents_transactions([intent])[intent.pk]
        if t["canonical"]
        and t["network"] == na.network.code
        and (t["token_contract"] or "").lower() == contract  # not a stray token or coin
    ]
    return min((t["confirmations"] for t in txs), default=0)


def status(intent: PaymentIntent, now: datetime) -> dict[str, Any]:
    """What the page shows, in words, for every state."""
    na = intent.network_asset
    asset = na.asset.code if na else ""
    remaining = amount_remaining(intent)
    required = intent.required_confirmations or 0
    confirmations = _confirmations(intent) if intent.state in (S.DETECTED, S.CONFIRMING) else 0
    flags = intent.flags or []
    late = "late_payment" in flags
    wrong_asset, wrong_network = "wrong_asset" in flags, "wrong_network" in flags

    def shown(amount: int) -> str:
        return format_amount_for_display(amount, na.decimals, na.asset.display_decimals)

    texts = {
        S.CREATED: (_("Choose how to pay"), _("Pick a currency and network below.")),
        S.AWAITING_PAYMENT: (
            _("Waiting for your payment"),
            _("Send exactly the amount below to the address below. This page updates by itself."),
        ),
        S.DETECTED: (
            _("Payment seen"),
            _("Your payment is on its way: waiting for the network to confirm it."),
        ),
        S.CONFIRMING: (
            _("Confirming your payment"),
            _("%(count)s of %(required)s confirmations.") % {"count": confirmations, "required": required},
        ),
        S.PAID: (_("Paid, thank you"), _("Your payment is confirmed.")),
        S.UNDERPAID: (
            _("Partly paid"),
            _(
                "Less than the amount due arrived. Send the remaining %(amount)s %(asset)s to the same address."
            )
            % {"amount": shown(remaining or 0) if na else "", "asset": asset},
        ),
        S.OVERPAID: (
            _("Paid, with more than the amount due"),
            _("Your payment is confirmed. The merchant will contact you about the difference."),
        ),
        S.EXPIRED: (
            _("This payment request has expired"),
            _("Do not send funds to this address any more. Go back to the shop to start again."),
        ),
        S.FAILED: (_("The payment failed"), _("Please go back to the shop.")),
        S.REFUNDED: (_("Refunded"), _("This payment was refunded.")),
    }
    title, detail = texts[intent.state]
    # the effective deadline: a top-up asked for by support moves it later, a cancel earlier
    deadline = intents_deadlines([intent])[intent.pk]
    window_open = now < deadline and intent.canceled_at is None
    if intent.state == S.UNDERPAID and not window_open:
        # a top-up now would be late (not counted): never tell the customer to send more
        detail = _("The time to pay has run out. Do not send more; the merchant will contact you.")
    if late:
        detail = _("A payment arrived after this request expired. The merchant will review it.")
    elif (wrong_asset or wrong_network) and intent.state in (S.AWAITING_PAYMENT, S.EXPIRED, S.FAILED):
        # nothing valid arrived, but something did: never "waiting for your payment"
        if wrong_asset:
            title = _("Funds arrived in the wrong currency")
            detail = _(
                "Funds in another currency than %(asset)s arrived at this address. They do not count for "
                "this payment. Please contact the shop about them."
            ) % {"asset": asset}
        else:
            title = _("Funds arrived on the wrong network")
            detail = _(
                "Funds arrived at this address on another network than %(network)s. They do not count for "
                "this payment. Please contact the shop about them."
            ) % {"network": na.network.name}
        if intent.state == S.AWAITING_PAYMENT and window_open:
            detail += " " + _("To pay, send exactly the amount below before the time runs out.")
    if intent.state == S.CREATED and (not _open_for_payments(intent) or not _options(intent)):
        detail = _("This shop cannot take payments right now.")
    seconds_left = max(int((deadline - now).total_seconds()), 0)
    waiting = intent.state in (S.CREATED, S.AWAITING_PAYMENT, S.UNDERPAID) and window_open
    show_payment = intent.state in (S.AWAITING_PAYMENT, S.UNDERPAID) and window_open
    return {
        "state": intent.state,
        "title": title,
        "detail": detail,
        "late": late,
        "wrong_asset": wrong_asset,
        "wrong_network": wrong_network,
        "asset": asset or None,
        "network": na.network.name if na else None,
        "address": display_address(intent),
        "amount_due": shown(int(intent.amount_due_base_units)) if na else None,
        "remaining": shown(remaining) if na and remaining is not None else None,
        "confirmations": confirmations,
        "required_confirmations": required,
        "expires_at": intent.expires_at.isoformat(),
        "payment_deadline": deadline.isoformat(),
        "seconds_left": seconds_left if waiting else None,
        "payment_uri": payment_uri_remaining(intent) or payment_uri(intent),
        "redirect_url": (intent.success_url or None) if intent.state in (S.PAID, S.OVERPAID) else None,
        # "cancel" while nothing is paid; "back to the shop" once it is over without payment
        "cancel_url": (intent.cancel_url or None)
        if intent.state in (S.CREATED, S.AWAITING_PAYMENT, S.EXPIRED, S.FAILED)
        else None,
        "show_payment": show_payment,
        "final": intent.state in (S.PAID, S.OVERPAID, S.REFUNDED),
    }


def _open_for_payments(intent: PaymentIntent) -> bool:
    return intent.merchant.is_active


def _secured(response: HttpResponse, intent: PaymentIntent) -> HttpResponse:
    """Nothing loads from elsewhere, and only the merchant's configured origins may frame the page."""
    origins = " ".join(intent.merchant.checkout_origins) or "'none'"
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {origins}"
    )
    response["Referrer-Policy"] = "same-origin"
    return response


def _options(intent: PaymentIntent) -> list:
    return payment_options(intent.merchant, intent.price_currency)


def _per_minute() -> int:
    return settings.GATEWAY_CHECKOUT_RATE_PER_MINUTE


def _polls_per_minute() -> int:
    return settings.GATEWAY_CHECKOUT_POLLS_PER_MINUTE


def _polls_per_address() -> int:
    return settings.GATEWAY_CHECKOUT_POLLS_PER_ADDRESS_PER_MINUTE


@never_cache
@xframe_options_exempt  # framing is decided by the CSP frame-ancestors above, per merchant
@require_GET
@limited("checkout", _per_minute, html=True)
def page(request, token: str):
    intent = _intent(token)
    return _render(request, intent, error=None)


def _render(request, intent: PaymentIntent, *, error: str | None, status_code: int = 200):
    now = timezone.now()
    context = {
        "intent": intent,
        "merchant_name": intent.merchant.name,
        "price": f"{price_text(intent)} {intent.price_currency}",
        "status": status(intent, now),
        "options": _options(intent) if intent.state == S.CREATED and _open_for_payments(intent) else [],
        "frame_origins": " ".join(intent.merchant.checkout_origins),
        "error": error,
    }
    return _secured(render(request, "checkout/pay.html", context, status=status_code), intent)


@csrf_exempt  # no session or cookie authorises this: the unguessable token is the capability, and the
# form must also work framed on the merchant's site, where the browser withholds a CSRF cookie
@xframe_options_exempt
@require_POST
@limited("checkout", _per_minute, html=True)
def select(request, token: str):
    intent = _intent(token)
    options = {str(na.pk): na for na in _options(intent)} if _open_for_payments(intent) else {}
    chosen = options.get(request.POST.get("option", ""))
    if chosen is None:
        return _render(request, intent, error=_("Please choose one of the options."), status_code=400)
    try:
        with transaction.atomic():  # a refused choice writes nothing
            services.payment_intent_select_asset(
                merchant=intent.merchant, intent_id=intent.pk, network_asset=chosen, now=timezone.now()
            )
    except GatewayError as exc:
        messages = {
            "intent_asset_already_chosen": _("The way to pay was already chosen."),
            "intent_expired": _("This payment request has expired."),
            "rate_unavailable": _("No exchange rate is available right now. Please try again shortly."),
        }
        message = messages.get(
            exc.code, _("This option cannot be used right now. Please choose another one.")
        )
        return _render(request, _intent(token), error=message, status_code=exc.http_status)
    return redirect("checkout-page", token=token, permanent=False)


@never_cache
@require_GET
# the page's own polling: per address (every token counts, known or not), then per page
@limited("checkout-status", _polls_per_address, per_token=_polls_per_minute)
def status_json(request, token: str):
    return JsonResponse(status(_intent(token), timezone.now()))


@require_GET
@limited("checkout", _per_minute)
def qr_svg(request, token: str):
    intent = _intent(token)
    uri = (payment_uri_remaining(intent) if request.GET.get("remaining") else None) or payment_uri(intent)
    if uri is None:
        raise Http404("no payment URI yet")
    out = io.BytesIO()
    segno.make(uri, micro=False, error="m").save(out, kind="svg", scale=5, border=4, xmldecl=False)
    response = HttpResponse(out.getvalue(), content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=30"
    return response

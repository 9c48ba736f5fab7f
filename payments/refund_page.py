"""The customer's refund page, `/refund/<signed token>`: the link the merchant sends (the API's
`destination_url`), where the customer enters the address the refund is to be paid to. It looks like the
checkout, speaks the customer's language, checks the address for the payment's network (EIP-55, bech32
with the network's prefix, base58 with its version bytes) and writes through the same service as support.

- `GET  /refund/<token>`   the page: what is refunded, and the form while a destination is awaited
- `POST /refund/<token>`   the destination (once; support may change it later)
"""

from __future__ import annotations

from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from . import services
from .checkout import _per_minute, _secured
from .errors import GatewayError
from .models import Refund
from .pricing import format_amount
from .ratelimit import limited
from .selectors_refunds import refund_from_link

State = Refund.State


def _refund(token: str) -> Refund:
    refund = refund_from_link(token)
    if refund is None:
        raise Http404("no such refund")
    return refund


def _waiting(refund: Refund, now) -> bool:
    return (
        not refund.destination
        and refund.state in (State.REQUESTED, State.APPROVED)
        and now < refund.expires_at
    )


def _status(refund: Refund, now) -> tuple[str, str]:
    if _waiting(refund, now):
        return _("Where should we send your refund?"), _(
            "Enter an address of your own wallet for this network. Please check it carefully: a payment "
            "to a wrong address cannot be taken back."
        )
    if refund.state in (State.CANCELED,):
        return _("This refund was canceled"), _("Please contact the shop if you have questions.")
    if refund.state == State.CONFIRMED:
        return _("Your refund was sent"), _("The payment to your address is confirmed.")
    if refund.state == State.DETECTED:
        return _("Your refund is on its way"), _(
            "The payment to your address was seen and is being confirmed."
        )
    if refund.destination:
        return _("Thank you"), _("We have your address. The shop sends the refund to it.")
    return _("This link has expired"), _("Please contact the shop for a new one.")


@never_cache
@xframe_options_exempt  # framing is decided by the CSP frame-ancestors, per merchant
@csrf_exempt  # the signed, unguessable link is the capability (as the checkout's token is)
@require_http_methods(["GET", "POST"])
@limited("checkout", _per_minute, html=True)
def page(request, token: str):
    refund = _refund(token)
    now = timezone.now()
    error = None
    status_code = 200
    if request.method == "POST":
        if not _waiting(refund, now):
            error, status_code = _("This refund no longer needs an address."), 409
        else:
            try:
                with transaction.atomic():  # a refused address writes nothing
                    services.refund_destination_set(
                        refund_id=refund.pk,
                        address=request.POST.get("address", "")[:200],
                        set_by="customer",
                        now=now,
                    )
            except GatewayError as exc:
                messages = {
                    "invalid_address": _(
                        "This is not an address of the %(network)s network. Please check it and try again."
                    )
                    % {"network": refund.network_asset.network.name},
                    "destination_set": _("An address was already given for this refund."),
                }
                error = messages.get(exc.code, _("The address could not be saved. Please try again."))
                status_code = exc.http_status
            else:
                return redirect("refund-page", token=token, permanent=False)
    title, detail = _status(refund, now)
    na = refund.network_asset
    context = {
        "refund": refund,
        "merchant_name": refund.intent.merchant.name,
        "amount": f"{format_amount(int(refund.amount_base_units), na.decimals)} {na.asset.code}",
        "network": na.network.name,
        "title": title,
        "detail": detail,
        "form": _waiting(refund, now),
        "error": error,
        "value": request.POST.get("address", "")[:200] if error else "",
    }
    response = render(request, "checkout/refund.html", context, status=status_code)
    return _secured(response, refund.intent)

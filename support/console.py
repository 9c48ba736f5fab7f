"""The console's actions on one payment, as a registry: each action module (safe actions, dangerous
actions) registers its actions here, and the payment page lists those the user may take on that payment
and routes `<payment>/action/<name>/` to them. One dispatcher checks, before any action code runs, that
the payment is in the user's merchants and that the user holds the action's permission; a POST that
fails either check is a 403, never a silent no-op."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from payments.admin_access import may_act_for_merchant, staff_merchants
from payments.models import PaymentIntent


@dataclass(frozen=True)
class PaymentAction:
    """`view(request, intent, context)` shows the action's form on GET and acts on POST; `context` is the
    admin's page context (site header, breadcrumbs). `applies(intent)` says whether the action makes sense
    for the payment now (a button is shown only then). `permission` is the model permission that acting
    needs ("app_label.codename"), on top of the payment's merchant being among the user's."""

    name: str
    label: str
    permission: str
    view: Callable[[HttpRequest, PaymentIntent, dict], HttpResponse]
    applies: Callable[[PaymentIntent], bool] = lambda intent: True
    dangerous: bool = False
    description: str = ""


PAYMENT_ACTIONS: dict[str, PaymentAction] = {}


def payment_action(
    name: str,
    *,
    label: str,
    permission: str,
    applies: Callable[[PaymentIntent], bool] = lambda intent: True,
    dangerous: bool = False,
    description: str = "",
):
    """Register the decorated view as the payment action `name`."""

    def register(view):
        if name in PAYMENT_ACTIONS:
            raise ValueError(f"payment action {name!r} registered twice")
        PAYMENT_ACTIONS[name] = PaymentAction(
            name=name,
            label=label,
            permission=permission,
            view=view,
            applies=applies,
            dangerous=dangerous,
            description=description,
        )
        return view

    return register


def may_act(user, action: PaymentAction, intent: PaymentIntent) -> bool:
    """The action's permission, and the payment's merchant among the user's."""
    return may_act_for_merchant(user, action.permission, intent.merchant_id)


def payment_actions_for(user, intent: PaymentIntent) -> list[PaymentAction]:
    """The actions to offer on the payment page: permitted and applicable, safe ones first. The
    merchant is looked up once for all of them (it is the same payment)."""
    if not may_act_for_merchant(user, None, intent.merchant_id):
        return []
    offered = [a for a in PAYMENT_ACTIONS.values() if a.applies(intent) and user.has_perm(a.permission)]
    return sorted(offered, key=lambda a: (a.dangerous, a.label))


def payment_action_dispatch(request: HttpRequest, intent_id: str, name: str, context: dict) -> HttpResponse:
    """Run the action `name` on the payment, after the scope and permission checks. A payment out of the
    user's merchants is a 404 (as on its page); an action the user may not take is a 403."""
    action = PAYMENT_ACTIONS.get(name)
    if action is None:
        raise Http404
    intent = (
        PaymentIntent.objects.filter(pk=intent_id, merchant__in=staff_merchants(request.user))
        .select_related("merchant", "network_asset__asset", "network_asset__network", "address")
        .first()
    )
    if intent is None:
        raise Http404
    if not may_act(request.user, action, intent):
        raise PermissionDenied
    return action.view(request, intent, context)

"""The console's queues: what is waiting for support, counted per queue with its oldest item's age and a
link to the admin list that shows exactly those items. Counting is scoped to the merchants the user is
granted (superusers: all) and costs one aggregate query per queue (a grouped queue, such as open cases
by assignee, one query for all its rows). Each queue's rows come from the same function its list filter
uses (payments/admin_filters.py, support/admin_filters.py), so a count and its list cannot disagree."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.contrib.auth import get_permission_codename
from django.db import models
from django.db.models import Count, Min
from django.urls import reverse

from payments import admin_filters as pf
from payments.admin_access import staff_merchants
from payments.models import PaymentIntent, PaymentState, Refund, WebhookDelivery, WebhookEndpoint

from .admin_filters import UNASSIGNED, cases_unresolved
from .models import ApprovalRequest, SupportCase


@dataclass(frozen=True)
class Scope:
    """Whose items are counted, and when. `merchant_ids` None: every merchant (a superuser)."""

    now: datetime
    merchant_ids: list[str] | None

    @classmethod
    def of(cls, user, now: datetime) -> Scope:
        if user.is_active and user.is_superuser:
            return cls(now=now, merchant_ids=None)
        return cls(now=now, merchant_ids=list(staff_merchants(user).values_list("pk", flat=True)))

    def rows(self, model: type[models.Model], merchant_path: str = "merchant") -> models.QuerySet:
        queryset = model._default_manager.all()
        if self.merchant_ids is None:
            return queryset
        return queryset.filter(**{f"{merchant_path}__in": self.merchant_ids})


@dataclass(frozen=True)
class QueueRow:
    """One line of the console: a queue (or one group of a grouped queue) as counted now."""

    name: str
    label: str
    count: int
    oldest: datetime | None
    url: str
    help: str
    now: datetime

    @property
    def age(self) -> str:
        return age_text(self.now - self.oldest) if self.oldest else ""


def age_text(delta: timedelta) -> str:
    """A wait in words a person reads at a glance: "3 d 4 h", "3 h 12 min", "12 min", "< 1 min"."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else "< 1 min"


def changelist_url(model: type[models.Model], query: dict[str, str]) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def _may_view(user, model: type[models.Model]) -> bool:
    """As the admin decides whether a user may open a model's list: the view or the change permission."""
    opts = model._meta
    return any(
        user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


@dataclass(frozen=True)
class Queue:
    """`rows(scope)` builds the queue's items (scoped); `query` is the changelist's filter parameters that
    list exactly them; `oldest` is the time (a field name or an expression) whose minimum is the oldest
    item's wait."""

    name: str
    label: str
    model: type[models.Model]
    rows: Callable[[Scope], models.QuerySet]
    query: dict[str, str]
    oldest: str | models.Expression
    help: str = ""

    def visible_to(self, user) -> bool:
        return _may_view(user, self.model)

    def count(self, scope: Scope) -> list[QueueRow]:
        totals = self.rows(scope).aggregate(count=Count("pk"), oldest=Min(self.oldest))
        url = changelist_url(self.model, self.query)
        return [QueueRow(self.name, self.label, totals["count"], totals["oldest"], url, self.help, scope.now)]


@dataclass(frozen=True)
class CaseQueue:
    """Unresolved cases grouped by one column (status, or assignee): one row per group, one query."""

    name: str
    label: str
    group_by: str
    help: str = ""
    always: tuple[str | None, ...] = ()  # groups shown even when empty
    model: type[models.Model] = field(default=SupportCase)

    def visible_to(self, user) -> bool:
        return _may_view(user, SupportCase)

    def count(self, scope: Scope) -> list[QueueRow]:
        label_of = f"{self.group_by}__username" if self.group_by == "assignee" else self.group_by
        groups = {
            row[self.group_by]: row
            for row in cases_unresolved(scope.rows(SupportCase))
            .values(self.group_by, label_of)
            .annotate(count=Count("pk"), oldest=Min("opened_at"))
            .order_by()
        }
        for key in self.always:
            groups.setdefault(key, {self.group_by: key, label_of: key, "count": 0, "oldest": None})
        return [self._row(groups[key], scope.now) for key in sorted(groups, key=self._order)]

    def _order(self, key):
        if self.group_by == "status":
            return SupportCase.Status.values.index(key)
        return (key is not None, str(key))  # unassigned first, then by user id

    def _row(self, group: dict, now: datetime) -> QueueRow:
        key = group[self.group_by]
        if self.group_by == "status":
            label = f"{self.label}: {SupportCase.Status(key).label}"
            query = {"status": key}
        else:
            label = f"{self.label}: {group['assignee__username'] or 'unassigned'}"
            query = {"status": "unresolved", "assignee": UNASSIGNED if key is None else str(key)}
        name = f"{self.name}:{key if key is not None else UNASSIGNED}"
        url = changelist_url(SupportCase, query)
        return QueueRow(name, label, group["count"], group["oldest"], url, self.help, now)


S = PaymentState


def _intents(scope: Scope) -> models.QuerySet[PaymentIntent]:
    return scope.rows(PaymentIntent)


def _flag_queue(flag: str, label: str, help: str) -> Queue:
    return Queue(
        name=flag,
        label=label,
        model=PaymentIntent,
        rows=lambda scope: _intents(scope).filter(flags__contains=[flag]),
        query={"flag": flag},
        oldest="created_at",
        help=help,
    )


def _case_kind_queue(name: str, label: str, kind: str, help: str) -> Queue:
    """The unresolved cases of one kind (age: since the case opened)."""
    return Queue(
        name=name,
        label=label,
        model=SupportCase,
        rows=lambda scope: cases_unresolved(scope.rows(SupportCase)).filter(kind=kind),
        query={"kind__exact": kind, "status": "unresolved"},
        oldest="opened_at",
        help=help,
    )


# The console's queues, in the order shown.
QUEUES: list[Queue | CaseQueue] = [
    Queue(
        "awaiting_payment",
        "Awaiting payment",
        PaymentIntent,
        lambda scope: _intents(scope).filter(state=S.AWAITING_PAYMENT),
        {"state__exact": S.AWAITING_PAYMENT},
        "created_at",
        "address given, no funds seen yet",
    ),
    Queue(
        "in_flight",
        "Detected or confirming",
        PaymentIntent,
        lambda scope: pf.intents_in_flight(_intents(scope)),
        {"seen": "confirming"},
        "created_at",
        "funds seen, waiting for a block or confirmations",
    ),
    Queue(
        "underpaid_open",
        "Underpaid, window open",
        PaymentIntent,
        lambda scope: pf.intents_underpaid(_intents(scope), window_open=True, now=scope.now),
        {"underpaid": "open"},
        "created_at",
        "a top-up before the deadline completes it",
    ),
    Queue(
        "underpaid_closed",
        "Underpaid, window closed",
        PaymentIntent,
        lambda scope: pf.intents_underpaid(_intents(scope), window_open=False, now=scope.now),
        {"underpaid": "closed"},
        pf.intent_deadline(),
        "accept the underpayment, ask for a top-up, or refund",
    ),
    Queue(
        "overpaid",
        "Overpaid",
        PaymentIntent,
        lambda scope: _intents(scope).filter(state=S.OVERPAID),
        {"state__exact": S.OVERPAID},
        "created_at",
        "keep or refund the excess",
    ),
    _flag_queue("late_payment", "Late payment", "funds first seen after the deadline"),
    _flag_queue("duplicate_payment", "Duplicate payment", "a further payment after the intent was paid"),
    _flag_queue("wrong_network", "Wrong network", "funds on another network to the same address"),
    _flag_queue("wrong_asset", "Wrong asset", "another asset sent to the address"),
    Queue(
        "replaced_or_dropped",
        "Replaced or dropped",
        PaymentIntent,
        lambda scope: pf.intents_replaced_or_dropped(_intents(scope)),
        {"transactions": "dropped"},
        "created_at",
        "a transaction stopped counting (replaced, dropped, reorged out)",
    ),
    Queue(
        "paid_not_fulfilled",
        "Paid, not fulfilled",
        PaymentIntent,
        lambda scope: pf.intents_paid_not_fulfilled(_intents(scope)),
        {"fulfilment": "awaiting"},
        pf.first_paid_at(),
        "the merchant has not reported the order fulfilled",
    ),
    Queue(
        "endpoints_failing",
        "Webhook endpoints failing",
        WebhookEndpoint,
        lambda scope: pf.endpoints_failing(scope.rows(WebhookEndpoint)),
        {"health": "failing"},
        "failing_since",
        "deliveries fail; the gateway disables the endpoint if this lasts",
    ),
    Queue(
        "endpoints_disabled",
        "Webhook endpoints disabled",
        WebhookEndpoint,
        lambda scope: pf.endpoints_disabled_by_gateway(scope.rows(WebhookEndpoint)),
        {"health": "disabled"},
        "disabled_at",
        "the merchant receives nothing until it is enabled again",
    ),
    Queue(
        "deliveries_failed",
        "Failed webhook deliveries",
        WebhookDelivery,
        lambda scope: scope.rows(WebhookDelivery, "endpoint__merchant").filter(
            state=WebhookDelivery.State.FAILED
        ),
        {"state__exact": WebhookDelivery.State.FAILED},
        "created_at",
        "no attempts left (or 410): send again once the endpoint works",
    ),
    Queue(
        "refunds_open",
        "Refunds to be paid",
        Refund,
        lambda scope: scope.rows(Refund).filter(
            state__in=[Refund.State.APPROVED, Refund.State.AWAITING_PAYMENT]
        ),
        {"state__in": "approved,awaiting_payment"},
        "created_at",
        "waiting for the customer's address or the merchant's payment; they fail unpaid at their deadline",
    ),
    Queue(
        "refunds_failed",
        "Refunds failed",
        Refund,
        lambda scope: scope.rows(Refund).filter(state=Refund.State.FAILED),
        {"state__exact": Refund.State.FAILED},
        "updated_at",
        "not paid in time (or only with a wrong amount): ask again or settle with the merchant",
    ),
    _case_kind_queue(
        "unknown_outflows",
        "Unknown outflows",
        SupportCase.Kind.UNKNOWN_OUTFLOW,
        "money left a payment address for an address the merchant never declared",
    ),
    _case_kind_queue(
        "chain_mismatches",
        "Chain mismatches",
        SupportCase.Kind.CHAIN_MISMATCH,
        "the nightly re-verification found the chain disagreeing with a payment's stored evidence",
    ),
    _case_kind_queue(
        "close_differences",
        "Close differences",
        SupportCase.Kind.CLOSE_DIFFERENCE,
        "the daily close found the chain's balance of payment addresses differing from the evidence",
    ),
    CaseQueue(
        "cases_status",
        "Open cases",
        "status",
        "cases not resolved, by status",
        always=(
            SupportCase.Status.OPEN,
            SupportCase.Status.IN_PROGRESS,
            SupportCase.Status.WAITING_ON_CUSTOMER,
        ),
    ),
    CaseQueue("cases_assignee", "Open cases", "assignee", "cases not resolved, by assignee", always=(None,)),
    Queue(
        "approvals_waiting",
        "Approvals waiting",
        ApprovalRequest,
        lambda scope: scope.rows(ApprovalRequest).filter(status=ApprovalRequest.Status.PENDING),
        {"status__exact": ApprovalRequest.Status.PENDING},
        "created_at",
        "dangerous actions a second person must approve or reject before they expire",
    ),
]


def queues_count(user, now: datetime, queues: Iterable[Queue | CaseQueue] = QUEUES) -> list[QueueRow]:
    """Every queue the user may open, counted in their merchants."""
    visible = [queue for queue in queues if queue.visible_to(user)]
    if not visible:
        return []
    scope = Scope.of(user, now)
    return [row for queue in visible for row in queue.count(scope)]

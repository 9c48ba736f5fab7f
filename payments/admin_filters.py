"""Admin list filters that the stock admin lacks: a date range (from, to, both inclusive, whole days in the
current time zone) on a date-time column, and the same on a time computed per row (when a payment was
first paid: there is no column for it, the first transition to `paid` says it); and the payment
filters the support queues link to. Each filter's rows come from one function below, which the queues
(support/queues.py) count with, so a queue's count and its link's list cannot disagree."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, PAGE_VAR
from django.db import models
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from .models import ChainObservation, PaymentIntent, PaymentState, StateTransition, WebhookEndpoint
from .selectors import effective_deadline_sql

S = PaymentState


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise IncorrectLookupParameters(f"{name}: a date as YYYY-MM-DD") from exc


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class _DateRange:
    """The two parameters `<name>__from` and `<name>__to`, their parsing and the sidebar form. The range
    is [start of `from`, start of the day after `to`), so both days are included whole."""

    template = "admin/filters/date_range.html"
    range_name: str

    @property
    def parameter_from(self) -> str:
        return f"{self.range_name}__from"

    @property
    def parameter_to(self) -> str:
        return f"{self.range_name}__to"

    def _take(self, params: dict) -> None:
        for name in (self.parameter_from, self.parameter_to):
            if name in params:
                value = params.pop(name)
                self.used_parameters[name] = value[-1] if isinstance(value, list) else value
        self.day_from = _day(self.used_parameters.get(self.parameter_from), self.parameter_from)
        self.day_to = _day(self.used_parameters.get(self.parameter_to), self.parameter_to)
        if self.day_from and self.day_to and self.day_from > self.day_to:
            raise IncorrectLookupParameters("the range ends before it starts")

    def expected_parameters(self) -> list[str]:
        return [self.parameter_from, self.parameter_to]

    def has_output(self) -> bool:
        return True

    def range_lookups(self, column: str) -> dict:
        lookups = {}
        if self.day_from:
            lookups[f"{column}__gte"] = _start_of(self.day_from)
        if self.day_to:
            lookups[f"{column}__lt"] = _start_of(self.day_to + timedelta(days=1))
        return lookups

    def choices(self, changelist):
        """One "choice" that carries what the form needs: its values, the other parameters of the page
        as hidden fields (search, ordering, other filters; never the page number), and a reset link."""
        mine = set(self.expected_parameters())
        kept = [
            (name, value)
            for name, values in changelist.filter_params.items()
            if name not in mine and name not in (PAGE_VAR, ERROR_FLAG)
            for value in (values if isinstance(values, list) else [values])
        ]
        yield {
            "selected": bool(self.day_from or self.day_to),
            "parameter_from": self.parameter_from,
            "parameter_to": self.parameter_to,
            "value_from": self.day_from.isoformat() if self.day_from else "",
            "value_to": self.day_to.isoformat() if self.day_to else "",
            "hidden": kept,
            "reset_query_string": changelist.get_query_string(remove=list(mine)),
        }


class DateRangeFilter(_DateRange, admin.FieldListFilter):
    """`list_filter = [("created_at", DateRangeFilter)]`: rows whose column falls on the days chosen."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.range_name = field_path
        taken = {name: params.pop(name) for name in self.expected_parameters() if name in params}
        super().__init__(field, request, params, model, model_admin, field_path)
        self._take(taken)

    def queryset(self, request, queryset):
        lookups = self.range_lookups(self.field_path)
        return queryset.filter(**lookups) if lookups else queryset


class PaidTimeRangeFilter(_DateRange, admin.ListFilter):
    """Payments first paid (their first transition to `paid`) on the days chosen. A payment that went
    paid, back to confirming on a reorg, then paid again, was first paid at the first of these."""

    title = "paid time"
    range_name = "paid_at"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self._take(params)

    def queryset(self, request, queryset):
        lookups = self.range_lookups("first_paid_at")
        if not lookups:
            return queryset
        return queryset.alias(first_paid_at=first_paid_at()).filter(**lookups)


# --- Payment filters the support queues link to ---------------------------------------------------------


def intent_deadline() -> models.Expression:
    """An intent's deadline as evaluate() applies it: expiry or cancellation, a top-up's extension
    (`selectors.effective_deadline_sql`)."""
    return effective_deadline_sql()


def intents_underpaid(queryset: QuerySet[PaymentIntent], *, window_open: bool, now: datetime) -> QuerySet:
    """Underpaid intents whose window is still open (a top-up may still complete them) or closed."""
    window = Q(deadline__gt=now) if window_open else Q(deadline__lte=now)
    return queryset.filter(state=S.UNDERPAID).alias(deadline=intent_deadline()).filter(window)


def intents_in_flight(queryset: QuerySet[PaymentIntent]) -> QuerySet[PaymentIntent]:
    """Funds seen, waiting for a block or for confirmations."""
    return queryset.filter(state__in=[S.DETECTED, S.CONFIRMING])


def intents_replaced_or_dropped(queryset: QuerySet[PaymentIntent]) -> QuerySet[PaymentIntent]:
    """Intents with a transaction that stopped counting (replaced, dropped, or reorged out)."""
    return queryset.filter(Exists(ChainObservation.objects.filter(intent=OuterRef("pk"), canonical=False)))


def intents_paid_not_fulfilled(queryset: QuerySet[PaymentIntent]) -> QuerySet[PaymentIntent]:
    """Paid (or overpaid) and the merchant has not reported the order fulfilled."""
    return queryset.filter(state__in=[S.PAID, S.OVERPAID], fulfilled_at__isnull=True)


def first_paid_at() -> Subquery:
    """When the intent first went to `paid` (null if never)."""
    first = (
        StateTransition.objects.filter(intent=OuterRef("pk"), to_state=S.PAID)
        .order_by("created_at", "id")
        .values("created_at")[:1]
    )
    return Subquery(first, output_field=models.DateTimeField())


def endpoints_failing(queryset: QuerySet[WebhookEndpoint]) -> QuerySet[WebhookEndpoint]:
    """Endpoints still enabled whose deliveries fail (the gateway disables them after a while)."""
    return queryset.filter(failing_since__isnull=False, enabled=True, deleted_at__isnull=True)


def endpoints_disabled_by_gateway(queryset: QuerySet[WebhookEndpoint]) -> QuerySet[WebhookEndpoint]:
    """Endpoints the gateway disabled (410 Gone, or failing for too long) that the merchant still has."""
    return queryset.filter(
        enabled=False,
        disabled_reason__in=[WebhookEndpoint.DisabledReason.GONE, WebhookEndpoint.DisabledReason.FAILING],
        deleted_at__isnull=True,
    )


class UnderpaidWindowFilter(admin.SimpleListFilter):
    title = "underpaid"
    parameter_name = "underpaid"

    def lookups(self, request, model_admin):
        return [("open", "window open (a top-up may complete it)"), ("closed", "window closed")]

    def queryset(self, request, queryset):
        if self.value() in ("open", "closed"):
            return intents_underpaid(queryset, window_open=self.value() == "open", now=timezone.now())
        return queryset


class InFlightFilter(admin.SimpleListFilter):
    title = "funds seen"
    parameter_name = "seen"

    def lookups(self, request, model_admin):
        return [("confirming", "detected or confirming")]

    def queryset(self, request, queryset):
        return intents_in_flight(queryset) if self.value() == "confirming" else queryset


class ReplacedOrDroppedFilter(admin.SimpleListFilter):
    title = "transactions"
    parameter_name = "transactions"

    def lookups(self, request, model_admin):
        return [("dropped", "one replaced, dropped or reorged out")]

    def queryset(self, request, queryset):
        return intents_replaced_or_dropped(queryset) if self.value() == "dropped" else queryset


class FulfilmentFilter(admin.SimpleListFilter):
    title = "fulfilment"
    parameter_name = "fulfilment"

    def lookups(self, request, model_admin):
        return [("awaiting", "paid, not fulfilled"), ("fulfilled", "fulfilled")]

    def queryset(self, request, queryset):
        if self.value() == "awaiting":
            return intents_paid_not_fulfilled(queryset)
        if self.value() == "fulfilled":
            return queryset.filter(fulfilled_at__isnull=False)
        return queryset

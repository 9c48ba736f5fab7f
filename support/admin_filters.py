"""List filters of the case list, and the case rows the console's queues count with (support/queues.py),
so a queue's count and the list its link opens are the same rows."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from .models import SupportCase

Status = SupportCase.Status
UNRESOLVED = "unresolved"
UNASSIGNED = "none"


def cases_unresolved(queryset: QuerySet[SupportCase]) -> QuerySet[SupportCase]:
    return queryset.exclude(status=Status.RESOLVED)


class CaseStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(UNRESOLVED, "not resolved"), *Status.choices]

    def queryset(self, request, queryset):
        if self.value() == UNRESOLVED:
            return cases_unresolved(queryset)
        if self.value() in Status.values:
            return queryset.filter(status=self.value())
        return queryset


class AssigneeFilter(admin.SimpleListFilter):
    """Unassigned, or one assignee among those of the cases the user may see (never every user)."""

    title = "assignee"
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        assignees = (
            User.objects.filter(support_cases__in=model_admin.get_queryset(request))
            .distinct()
            .order_by("username")
            .values_list("pk", "username")
        )
        return [(UNASSIGNED, "unassigned"), *((str(pk), name) for pk, name in assignees)]

    def queryset(self, request, queryset):
        value = self.value()
        if value == UNASSIGNED:
            return queryset.filter(assignee__isnull=True)
        if value and value.isascii() and value.isdigit():
            return queryset.filter(assignee_id=int(value))
        return queryset


class DueFilter(admin.SimpleListFilter):
    title = "due"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [("overdue", "overdue (past due, not resolved)")]

    def queryset(self, request, queryset):
        if self.value() == "overdue":
            return cases_unresolved(queryset).filter(due_by__lt=timezone.now())
        return queryset


class EscalatedFilter(admin.SimpleListFilter):
    """Cases an agent handed to a lead (a lead's queue)."""

    title = "escalated"
    parameter_name = "escalated"

    def lookups(self, request, model_admin):
        return [("yes", "escalated"), ("no", "not escalated")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(escalated_at__isnull=self.value() == "no")
        return queryset

"""The audit log in the console: read-only (the database refuses changes too), scoped to the user's
merchants (and the entries of no merchant: role grants, system entries), exported as CSV with the hash
of every entry so an auditor can re-verify the chain outside the gateway."""

from __future__ import annotations

import json
from datetime import UTC

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import FieldError, PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone

from gateway.csvexport import csv_response
from payments.admin_access import EvidenceAdmin, staff_merchants

from .models import AuditCheckpoint, AuditEntry

PEOPLE = ("auth.user", "auth.group")
EXPORT_COLUMNS = (
    "sequence",
    "created_at",
    "actor",
    "role",
    "action",
    "merchant_id",
    "object_type",
    "object_id",
    "before",
    "after",
    "reason",
    "request_id",
    "client_address",
    "previous_hash",
    "entry_hash",
)


@admin.register(AuditEntry)
class AuditEntryAdmin(EvidenceAdmin):
    """Append-only: no add, change or delete. The list's "Export CSV" link exports what the list shows
    (its filters and search), oldest first."""

    list_display = (
        "sequence",
        "created_at",
        "actor",
        "role",
        "action",
        "merchant_id",
        "object_type",
        "object_id",
    )
    list_filter = ("action", "role", "object_type")
    search_fields = ("actor", "object_id", "merchant_id", "request_id", "reason")
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    change_list_template = "admin/support/auditentry/change_list.html"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        granted = list(staff_merchants(request.user).values_list("pk", flat=True))
        # Entries about staff (role grants, users and groups changed in the admin) belong to no merchant but
        # name the merchants a person works for: shown only when every merchant named is the viewer's.
        people = Q(object_type__in=PEOPLE)
        within = (Q(before__isnull=True) | Q(before__merchants__contained_by=granted)) & Q(
            after__merchants__contained_by=granted
        )
        return queryset.filter(
            Q(merchant_id__in=granted) | (Q(merchant_id="") & ~people) | (Q(merchant_id="") & people & within)
        )

    def get_urls(self):
        return [
            path(
                "export.csv", self.admin_site.admin_view(self.export_view), name="support_auditentry_export"
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        query = request.GET.urlencode()
        export = reverse("admin:support_auditentry_export") + (f"?{query}" if query else "")
        return super().changelist_view(request, {**(extra_context or {}), "export_url": export})

    def export_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            entries = self.get_changelist_instance(request).get_queryset(request).order_by("sequence")
        except (IncorrectLookupParameters, FieldError, ValueError, ValidationError):
            # as the list does with filters it cannot apply
            return HttpResponseRedirect(reverse("admin:support_auditentry_changelist") + f"?{ERROR_FLAG}=1")

        def rows():
            for entry in entries.iterator(chunk_size=1000):
                values = []
                for column in EXPORT_COLUMNS:
                    value = getattr(entry, column)
                    if column in ("before", "after"):
                        value = "" if value is None else json.dumps(value, sort_keys=True)
                    elif column == "created_at":
                        value = value.astimezone(UTC).isoformat(timespec="microseconds")  # as hashed
                    values.append(value)
                yield values

        return csv_response(f"audit-log-{timezone.now():%Y%m%d-%H%M%S}.csv", EXPORT_COLUMNS, rows())


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(EvidenceAdmin):
    list_display = ("sequence", "signed_at", "key_id", "entry_hash")
    readonly_fields = [f.name for f in AuditCheckpoint._meta.fields]

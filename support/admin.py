"""The support app's pages in the admin: the audit log (read-only, for auditors) and cases (scoped to the
merchants a user is granted; worked from their page, support/admin_cases.py). The console's queues are
on the admin index (support/queues.py, templates/admin/index.html)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q

from payments.admin_access import EvidenceAdmin, staff_merchants

from .admin_cases import SupportCaseAdmin
from .models import AuditCheckpoint, AuditEntry, SupportCase


@admin.register(AuditEntry)
class AuditEntryAdmin(EvidenceAdmin):
    """Append-only: no add, change or delete (the database refuses them too). Staff see the entries of their
    merchants and those of no merchant (role grants, system entries)."""

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
    list_filter = ("action", "role")
    search_fields = ("actor", "object_id", "merchant_id", "request_id", "reason")
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        granted = staff_merchants(request.user).values_list("pk", flat=True)
        return queryset.filter(Q(merchant_id="") | Q(merchant_id__in=granted))


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(EvidenceAdmin):
    list_display = ("sequence", "signed_at", "key_id", "entry_hash")
    readonly_fields = [f.name for f in AuditCheckpoint._meta.fields]


admin.site.register(SupportCase, SupportCaseAdmin)

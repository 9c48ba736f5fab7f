"""The support app's pages in the admin: the audit log (read-only, for auditors) and cases (scoped to the
merchants a user is granted). Case actions and queues come with the console (issue 12)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q

from payments.admin_access import EvidenceAdmin, MerchantScopedAdmin, ReadOnlyInline, staff_merchants

from .models import AuditCheckpoint, AuditEntry, CaseNote, SupportCase


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


class CaseNoteInline(ReadOnlyInline):
    model = CaseNote
    fields = ("created_at", "author", "body")


@admin.register(SupportCase)
class SupportCaseAdmin(MerchantScopedAdmin, admin.ModelAdmin):
    """Cases are opened by the gateway and worked through the case services; this page shows them."""

    list_display = ("id", "kind", "status", "merchant", "intent", "assignee", "opened_at", "due_by")
    list_filter = ("status", "kind")
    search_fields = ("intent__id", "merchant__id", "transaction_hashes")
    readonly_fields = [f.name for f in SupportCase._meta.fields]
    inlines = [CaseNoteInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


from . import actions_dangerous, admin_approvals  # noqa: E402, F401 (register the console's pages and actions)
from .admin_config import AuditedAdminMixin  # noqa: E402, F401 (registers the audited configuration admins)

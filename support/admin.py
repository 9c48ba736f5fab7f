"""The support app's pages in the admin: the audit log (read-only, for auditors) and cases (scoped to the
merchants a user is granted). Case actions and queues come with the console (issue 12)."""

from __future__ import annotations

from django.contrib import admin

from payments.admin_access import MerchantScopedAdmin, ReadOnlyInline

from .models import CaseNote, SupportCase


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


from . import actions_dangerous, admin_approvals, admin_audit, admin_payments  # noqa: E402, F401 (register the console's pages and actions)

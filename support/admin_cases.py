"""Cases in the admin: a place to work a case. The change page shows the case (read-only: no Save or
Delete) and, to whoever may act on it, three small forms (assign, change status, add a note), each
posting to its own admin URL that calls one service of `support.cases` (which checks the permission and
the merchant again and writes the audit entry). A case of another merchant is a 404; a POST without the
change permission on cases is a 403."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from guardian.shortcuts import get_users_with_perms

from payments.admin_access import ActionPermissionMixin, MerchantListFilter, ReadOnlyInline
from payments.errors import GatewayError
from payments.ratelimit import client_address

from .admin_filters import AssigneeFilter, CaseStatusFilter, DueFilter, EscalatedFilter
from .audit import request_audit_context
from .cases import case_assign, case_escalate, case_note_add, case_status_set
from .models import CaseNote, SupportCase

CASE_WORK_CODENAME = "change_supportcase"


def case_assignees(case: SupportCase) -> QuerySet[User]:
    """Whom a case may be given to: active staff who may work cases (the change permission, held
    directly or through a role) and see the case's merchant; superusers too."""
    granted = get_users_with_perms(
        case.merchant, only_with_perms_in=["view_merchant"], with_group_users=True
    ).values("pk")
    may_work = Q(
        user_permissions__codename=CASE_WORK_CODENAME, user_permissions__content_type__app_label="support"
    ) | Q(
        groups__permissions__codename=CASE_WORK_CODENAME,
        groups__permissions__content_type__app_label="support",
    )
    eligible = User.objects.filter(is_active=True, is_staff=True).filter(
        Q(is_superuser=True) | (Q(pk__in=granted) & may_work)
    )
    return User.objects.filter(pk__in=eligible.values("pk")).order_by("username")


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(queryset=User.objects.none(), required=False, empty_label="nobody")
    note = forms.CharField(required=False, max_length=2000, widget=forms.TextInput(attrs={"size": 40}))

    def __init__(self, *args, case: SupportCase, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = case_assignees(case)
        self.fields["assignee"].label_from_instance = lambda user: user.get_username()
        self.initial.setdefault("assignee", case.assignee_id)


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=SupportCase.Status.choices)
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="required to resolve: say how the case was resolved",
    )

    def clean(self):
        data = super().clean()
        if data.get("status") == SupportCase.Status.RESOLVED and not (data.get("note") or "").strip():
            self.add_error("note", "say how the case was resolved")
        return data


class EscalateForm(forms.Form):
    note = forms.CharField(
        label="for the lead",
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="what the lead should decide, and what you found",
    )


class NoteForm(forms.Form):
    body = forms.CharField(label="note", widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class CaseNoteInline(ReadOnlyInline):
    model = CaseNote
    fields = ("created_at", "author", "body")
    verbose_name_plural = "notes (the thread)"

    def has_view_permission(self, request, obj=None):
        # The thread is part of the case: whoever may see the case reads its notes.
        return self.admin_site.get_model_admin(SupportCase).has_view_permission(request, obj)


def _form_errors(form: forms.Form) -> str:
    return "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())


class SupportCaseAdmin(ActionPermissionMixin, admin.ModelAdmin):
    """Cases are opened by the gateway and worked through the case services (forms on the page, list
    actions); nothing is edited or deleted directly."""

    list_display = ("id", "kind", "status", "merchant", "intent", "assignee", "opened_at", "due_by")
    list_filter = (
        CaseStatusFilter,
        "kind",
        AssigneeFilter,
        ("merchant", MerchantListFilter),
        DueFilter,
        EscalatedFilter,
    )
    list_select_related = ("merchant", "assignee")
    search_fields = ("intent__id", "merchant__id", "transaction_hashes")
    readonly_fields = [f.name for f in SupportCase._meta.fields]
    inlines = [CaseNoteInline]
    actions = ["assign_to_me", "mark_in_progress"]
    change_form_template = "admin/support/supportcase/change_form.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the page is read-only; the work goes through the forms below it

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        own = [
            path(f"<path:object_id>/{name}/", self.admin_site.admin_view(view), name=f"{prefix}_{name}")
            for name, view in (
                ("assign", self.assign_view),
                ("status", self.status_view),
                ("note", self.note_view),
                ("escalate", self.escalate_view),
            )
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        case = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if case is not None and self.has_action_permission(request, case):
            extra_context["case_forms"] = {
                "assign": AssignForm(case=case),
                "status": StatusForm(initial={"status": case.status}),
                "note": NoteForm(),
                "escalate": EscalateForm()
                if case.escalated_at is None and case.status != "resolved"
                else None,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    # --- the forms' targets ---------------------------------------------------------------------------

    def _case_to_work(self, request: HttpRequest, object_id: str) -> SupportCase:
        """Another merchant's case (or none) is a 404; no permission to work cases is a 403."""
        case = self.get_object(request, unquote(object_id))
        if case is None:
            raise Http404
        self.require_action_permission(request, [case])
        return case

    def _back(self, case: SupportCase) -> HttpResponseRedirect:
        opts = self.opts
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[case.pk])
        )

    def _act(self, request: HttpRequest, case: SupportCase, form: forms.Form, act) -> HttpResponseRedirect:
        if not form.is_valid():
            self.message_user(request, f"nothing changed: {_form_errors(form)}", messages.ERROR)
            return self._back(case)
        try:
            done = act(form.cleaned_data, {"now": timezone.now(), **request_audit_context(request)})
        except GatewayError as exc:
            self.message_user(request, f"nothing changed: {exc.message} ({exc.code})", messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return self._back(case)

    @staticmethod
    def _who(user: User | None) -> str:
        return user.get_username() if user else "nobody"

    def assign_view(self, request, object_id):
        return require_POST(self._assign)(request, object_id)

    def status_view(self, request, object_id):
        return require_POST(self._status)(request, object_id)

    def note_view(self, request, object_id):
        return require_POST(self._note)(request, object_id)

    def escalate_view(self, request, object_id):
        return require_POST(self._escalate)(request, object_id)

    def _escalate(self, request, object_id):
        case = self._case_to_work(request, object_id)

        def act(data, context):
            case_escalate(actor=request.user, case=case, note=data["note"], **context)
            return f"case {case.pk} escalated to the support leads"

        return self._act(request, case, EscalateForm(request.POST), act)

    def _assign(self, request, object_id):
        case = self._case_to_work(request, object_id)

        def act(data, context):
            assignee = data["assignee"]
            case_assign(actor=request.user, case=case, assignee=assignee, note=data["note"], **context)
            return f"case {case.pk} assigned to {self._who(assignee)}"

        return self._act(request, case, AssignForm(request.POST, case=case), act)

    def _status(self, request, object_id):
        case = self._case_to_work(request, object_id)

        def act(data, context):
            status = data["status"]
            case_status_set(actor=request.user, case=case, status=status, note=data["note"], **context)
            return f"case {case.pk} is now {SupportCase.Status(status).label}"

        return self._act(request, case, StatusForm(request.POST), act)

    def _note(self, request, object_id):
        case = self._case_to_work(request, object_id)

        def act(data, context):
            case_note_add(actor=request.user, case=case, body=data["body"], **context)
            return f"note added to case {case.pk}"

        return self._act(request, case, NoteForm(request.POST), act)

    # --- list actions ---------------------------------------------------------------------------------

    @admin.action(description="Assign to me", permissions=("action",))
    def assign_to_me(self, request, queryset):
        cases = list(queryset)
        self.require_action_permission(request, cases)
        now, address = timezone.now(), client_address(request)
        changed = 0
        for case in cases:
            if case.assignee_id != request.user.pk:
                case_assign(
                    actor=request.user, case=case, assignee=request.user, now=now, client_address=address
                )
                changed += 1
        self.message_user(request, f"{changed} case(s) assigned to you", messages.SUCCESS)

    @admin.action(description="Mark in progress", permissions=("action",))
    def mark_in_progress(self, request, queryset):
        cases = list(queryset)
        self.require_action_permission(request, cases)
        now, address = timezone.now(), client_address(request)
        changed, resolved = 0, []
        for case in cases:
            if case.status == SupportCase.Status.RESOLVED:
                resolved.append(str(case.pk))
            elif case.status != SupportCase.Status.IN_PROGRESS:
                case_status_set(
                    actor=request.user,
                    case=case,
                    status=SupportCase.Status.IN_PROGRESS,
                    now=now,
                    client_address=address,
                )
                changed += 1
        self.message_user(request, f"{changed} case(s) marked in progress", messages.SUCCESS)
        if resolved:
            self.message_user(
                request,
                f"left as they are (resolved; reopen one from its page): {', '.join(resolved)}",
                messages.WARNING,
            )

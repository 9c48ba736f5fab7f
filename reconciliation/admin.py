"""Finance in the admin: the reports page (totals for a date range and filters, the reconciliation's first
rows, a CSV download of the whole range that starts at once), the operator's service fee schedules and the
valuations. Everything is scoped to the viewer's merchants (`staff_merchants`); the page needs
`reconciliation.view_reports`, the download `reconciliation.export_reconciliation` (finance), and every
download is written to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from gateway.csvexport import csv_download_response
from payments.admin_access import EvidenceAdmin, MerchantScopedAdmin, staff_merchants
from payments.models import Asset, Network, PaymentState
from payments.pricing import format_amount
from support.admin_config import AuditedAdminMixin
from support.audit import audit_record, request_audit_context
from support.roles import roles_of

from .csvcopy import reconciliation_csv
from .exports import csv_filename
from .models import (
    DailyClose,
    PaidValuation,
    Report,
    ServiceFeeSchedule,
    VerificationMismatch,
    VerificationRun,
)
from .moments import YEARS
from .reports import PRESETS, preset_range, totals
from .selectors import COLUMNS, RowFilter, reconciliation_rows

PREVIEW_ROWS = 50
MAX_PAGE_DAYS = 366  # the page sums its range in the request
PRESET_LABELS = {
    "today": "Today",
    "7d": "Last 7 days",
    "this_month": "This month",
    "last_month": "Last month",
}


class ReportForm(forms.Form):
    preset = forms.ChoiceField(
        choices=[("", "Dates below"), *((p, PRESET_LABELS[p]) for p in PRESETS)], required=False
    )
    date_from = forms.DateField(required=False, label="From", help_text="created on or after (UTC)")
    date_to = forms.DateField(required=False, label="To (inclusive)", help_text="created on or before (UTC)")
    merchant = forms.ModelChoiceField(queryset=None, required=False, empty_label="All my merchants")
    network = forms.ChoiceField(required=False)
    asset = forms.ChoiceField(required=False)
    state = forms.ChoiceField(choices=[("", "Any state"), *PaymentState.choices], required=False)

    def __init__(self, *args, merchants, bounded: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.bounded = bounded
        self.fields["merchant"].queryset = merchants
        self.fields["network"].choices = [("", "Any network"), *Network.objects.values_list("code", "name")]
        self.fields["asset"].choices = [("", "Any asset"), *Asset.objects.values_list("code", "code")]

    def clean(self):
        data = super().clean()
        for name in ("date_from", "date_to"):
            if data.get(name) and data[name].year not in YEARS:
                self.add_error(name, "A year from 1970 to 9998.")
                data.pop(name)
        if data.get("preset") and (data.get("date_from") or data.get("date_to")):
            raise forms.ValidationError("Choose a preset or dates, not both.")
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The range ends before it starts.")
        if not data.get("preset") and not data.get("date_from"):
            data["preset"] = "7d"  # a range is always bounded: the last seven days unless dates are given
        elif not data.get("preset") and self.bounded:
            end = data.get("date_to") or timezone.now().date()
            if (end - data["date_from"]).days >= MAX_PAGE_DAYS:
                raise forms.ValidationError(
                    f"The page shows at most {MAX_PAGE_DAYS} days; the download takes any range."
                )
        return data

    def range(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        data = self.cleaned_data
        if data.get("preset"):
            return preset_range(data["preset"], now)
        start = datetime.combine(data["date_from"], time(), tzinfo=UTC) if data.get("date_from") else None
        end = data.get("date_to")
        return start, (datetime.combine(end + timedelta(days=1), time(), tzinfo=UTC) if end else None)

    def row_filter(self, merchants, now: datetime) -> RowFilter:
        data = self.cleaned_data
        chosen = (
            [data["merchant"].pk] if data.get("merchant") else list(merchants.values_list("pk", flat=True))
        )
        start, end = self.range(now)
        return RowFilter(
            merchant_ids=tuple(chosen),
            created_from=start,
            created_to=end,
            network=data.get("network") or "",
            asset=data.get("asset") or "",
            state=data.get("state") or "",
        )


CLOSE_AMOUNTS = (
    "opening",
    "received",
    "swept",
    "refunded",
    "other_out",
    "fees",
    "closing",
    "chain_balance",
    "evidence_balance",
)


def close_display(close: DailyClose) -> dict:
    """A close as people read it: amounts in the asset's units (`0.50000000`), not base units."""
    decimals = close.network_asset.decimals
    shown = {
        name: format_amount(int(getattr(close, name)), decimals) if getattr(close, name) is not None else ""
        for name in CLOSE_AMOUNTS
    }
    return {"close": close, **shown}


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """Not a table: the finance reports page and its download, in place of a list and a change form."""

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.has_perm("reconciliation.view_reports")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path("", self.admin_site.admin_view(self.report_view), name="reconciliation_report_changelist"),
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_view),
                name="reconciliation_report_export",
            ),
        ]

    def _form(self, request, *, bounded: bool = True) -> tuple[ReportForm, object]:
        merchants = staff_merchants(request.user).order_by("name")
        data = request.GET if request.GET else {"preset": "7d"}
        return ReportForm(data, merchants=merchants, bounded=bounded), merchants

    def report_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form, merchants = self._form(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Finance reports",
            "opts": self.model._meta,
            "form": form,
            "may_export": request.user.has_perm("reconciliation.export_reconciliation"),
        }
        if form.is_valid():
            now = timezone.now()
            start, end = form.range(now)
            rows = reconciliation_rows(form.row_filter(merchants, now))
            preview: list[dict] = []

            def kept(rows):
                for row in rows:
                    if len(preview) < PREVIEW_ROWS:
                        preview.append(row)
                    yield row

            names = dict(merchants.values_list("pk", "name"))
            groups = totals(kept(rows), by_day=False)
            for group in groups:
                group["merchant_name"] = names.get(group["merchant_id"], group["merchant_id"])
            closes = DailyClose.objects.filter(merchant__in=merchants).select_related(
                "merchant", "network_asset__asset", "network_asset__network"
            )
            if start:
                closes = closes.filter(day__gte=start.date())
            if end:
                closes = closes.filter(
                    day__lt=end.date() if end.time() == time() else end.date() + timedelta(days=1)
                )
            context.update(
                closes=[
                    close_display(c)
                    for c in closes.order_by("-day", "merchant__name", "network_asset_id")[:PREVIEW_ROWS]
                ],
                totals=groups,
                preview=preview,
                columns=COLUMNS,
                start=start,
                end=end,
                export_url=reverse("admin:reconciliation_report_export")
                + "?"
                + (request.GET.urlencode() or "preset=7d"),
            )
        return TemplateResponse(request, "admin/reconciliation/report.html", context)

    def export_view(self, request):
        if not request.user.is_active or not request.user.has_perm("reconciliation.export_reconciliation"):
            raise PermissionDenied
        form, merchants = self._form(request, bounded=False)
        if not form.is_valid():
            return HttpResponseBadRequest(
                "The filters are not valid: " + "; ".join(form.errors.get("__all__", []))
            )
        now = timezone.now()
        f = form.row_filter(merchants, now)
        audit_record(
            actor=request.user.get_username(),
            role=roles_of(request.user),
            action="report.export",
            now=now,
            merchant_id=f.merchant_ids[0] if len(f.merchant_ids) == 1 else "",
            object_type="reconciliation.report",
            object_id="reconciliation",
            after={
                "merchants": list(f.merchant_ids),
                "from": f.created_from.isoformat() if f.created_from else None,
                "to": f.created_to.isoformat() if f.created_to else None,
                "network": f.network,
                "asset": f.asset,
                "state": f.state,
            },
            **request_audit_context(request),
        )
        label = "-".join(d.strftime("%Y%m%d") if d else "all" for d in (f.created_from, f.created_to))
        return csv_download_response(csv_filename(label), reconciliation_csv(f))


@admin.register(ServiceFeeSchedule)
class ServiceFeeScheduleAdmin(AuditedAdminMixin, MerchantScopedAdmin, admin.ModelAdmin):
    list_display = ("merchant", "valid_from", "percent_bps", "fixed_amount", "currency", "note")
    list_filter = ("currency",)
    ordering = ("merchant", "-valid_from")


@admin.register(PaidValuation)
class PaidValuationAdmin(MerchantScopedAdmin, EvidenceAdmin):
    merchant_path = "intent__merchant"
    list_display = ("intent", "paid_at", "currency", "rate", "rate_source", "rate_time", "attempts")
    readonly_fields = [f.name for f in PaidValuation._meta.fields]


def _in_units(name: str):
    def shown(self, close: DailyClose) -> str:
        return close_display(close)[name]

    shown.short_description = name.replace("_", " ")
    return shown


@admin.register(DailyClose)
class DailyCloseAdmin(MerchantScopedAdmin, EvidenceAdmin):
    """Amounts in the asset's units in the list (the stored base units on the record's page)."""

    list_display = ("day", "merchant", "network_asset", "status", *(f"{n}_units" for n in CLOSE_AMOUNTS))
    list_select_related = ("merchant", "network_asset__asset", "network_asset__network")
    locals().update({f"{n}_units": _in_units(n) for n in CLOSE_AMOUNTS})
    list_filter = ("status", "day", "network_asset__network")
    readonly_fields = [f.name for f in DailyClose._meta.fields]


@admin.register(VerificationMismatch)
class VerificationMismatchAdmin(MerchantScopedAdmin, EvidenceAdmin):
    merchant_path = "intent__merchant"
    list_display = ("found_at", "intent", "problem", "detail", "stored_state", "evidence_state", "cleared_at")
    list_filter = ("problem", ("cleared_at", admin.EmptyFieldListFilter))
    readonly_fields = [f.name for f in VerificationMismatch._meta.fields]


@admin.register(VerificationRun)
class VerificationRunAdmin(EvidenceAdmin):
    """Runs cover every merchant: their counts are the operator's (superusers and the auditor see them)."""

    list_display = ("started_at", "since", "until", "payments", "transactions", "mismatches")
    readonly_fields = [f.name for f in VerificationRun._meta.fields]

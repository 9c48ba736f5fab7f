"""Finance reports in the merchant API (scope `reports:read`): the per-order reconciliation and the movements
behind it (settlement legs, refunds), each as `.json` (pages of rows, a keyset cursor) and `.csv` (the
whole range streamed), with the same filters, rows and columns; and the totals. Parse, read the selector,
render."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from gateway.csvexport import csv_download_response, csv_lines
from payments.api.refund_views import CURSOR, list_query
from payments.api.serializers import next_link
from payments.api.views import ERRORS, page_limit
from payments.errors import InvalidRequest
from payments.models import PaymentState

from .csvcopy import reconciliation_csv
from .exports import csv_filename, csv_rows
from .moments import MOMENT_HELP, moment_parse
from .movements import MOVEMENT_COLUMN_SET, MOVEMENT_COLUMNS, movement_rows
from .reports import ASSET_AMOUNTS, FIAT_AMOUNTS, PRESETS, preset_range, totals
from .selectors import COLUMN_SET, COLUMNS, LIST_COLUMNS, RowFilter, reconciliation_rows

PAGE_DEFAULT, PAGE_MAX = 100, 1000
MAX_TOTALS_SPAN = timedelta(days=366)  # totals are summed in the request: a bounded range
PAYMENT_ID = re.compile(r"pi_[A-Za-z0-9]{1,37}")
COLUMN_SET_HEADER = "Gateway-Column-Set"


@extend_schema_field({"type": "string", "example": "2026-11-01", "description": MOMENT_HELP})
class MomentField(serializers.Field):
    """A date (`2026-11-01`, midnight UTC) or an ISO 8601 time with its offset."""

    default_error_messages = {"invalid": MOMENT_HELP}

    def to_internal_value(self, data) -> datetime:
        moment = moment_parse(data)
        if moment is None:
            self.fail("invalid")
        return moment

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class RangeQuery(serializers.Serializer):
    network = serializers.CharField(max_length=40, required=False, help_text="a network code")
    asset = serializers.CharField(max_length=20, required=False, help_text="an asset code")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = MomentField(required=False, help_text=f"from (included): {self.moment_of}")
        fields["to"] = MomentField(required=False, help_text=f"before (excluded): {self.moment_of}")
        return fields

    moment_of = "when the movement was seen"

    def validate(self, attrs):
        if "from" in attrs and "to" in attrs and attrs["from"] >= attrs["to"]:
            raise serializers.ValidationError(
                {"to": [serializers.ErrorDetail("`to` comes after `from`", code="invalid_range")]}
            )
        return attrs


class ReconciliationQuery(RangeQuery):
    state = serializers.ChoiceField(choices=PaymentState.choices, required=False)
    moment_of = "when the payment was created (a date: midnight UTC)"


def row_filter(merchant_id: str, query: dict) -> RowFilter:
    return RowFilter(
        merchant_ids=(merchant_id,),
        created_from=query.get("from"),
        created_to=query.get("to"),
        network=query.get("network", ""),
        asset=query.get("asset", ""),
        state=query.get("state", ""),
    )


@dataclass(frozen=True)
class Feed:
    """A report read as pages or as one CSV: its columns, its rows and how a page's cursor names a row."""

    column_set: str
    columns: tuple[str, ...]
    lists: frozenset[str]
    rows: Callable[..., Iterator[dict]]
    key: re.Pattern  # each part of a row's key after its time, in a cursor
    key_parts: int
    order: str
    # the whole CSV for a filter, when something faster than `csv_lines` over `rows` writes it
    csv: Callable[[RowFilter], Iterator[bytes]] | None = None

    def encode(self, position: tuple) -> str:
        when, key = position
        parts = list(key) if isinstance(key, tuple) else [key]
        raw = json.dumps([when.isoformat(), *parts]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, token: str) -> tuple:
        try:
            moment, *parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            parsed = datetime.fromisoformat(moment)
            if parsed.tzinfo is None or len(parts) != self.key_parts:
                raise ValueError(token)
            if not all(isinstance(p, str) and self.key.fullmatch(p) for p in parts):
                raise ValueError(token)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidRequest("the cursor is not valid", code="invalid_cursor", param="cursor") from None
        return parsed, (parts[0] if self.key_parts == 1 else tuple(parts))

    def schema_rows(self, name: str):
        return inline_serializer(
            name,
            {
                c: serializers.ListField(child=serializers.CharField(allow_null=True))
                if c in self.lists
                else serializers.CharField(allow_null=True)
                for c in self.columns
            },
            many=True,
        )


RECONCILIATION = Feed(
    COLUMN_SET,
    COLUMNS,
    LIST_COLUMNS,
    reconciliation_rows,
    PAYMENT_ID,
    1,
    "oldest payment first",
    csv=reconciliation_csv,
)
MOVEMENTS = Feed(
    MOVEMENT_COLUMN_SET,
    MOVEMENT_COLUMNS,
    frozenset(),
    movement_rows,
    re.compile(r"[a-z_:]{1,40}|[A-Za-z0-9_/]{1,60}"),
    2,
    "in the order they were seen",
)


def json_row(row: dict, columns: tuple[str, ...] = COLUMNS) -> dict:
    return {name: row[name] for name in columns}


def page_parameters():
    return [
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": PAGE_MAX},
            description=f"rows per page, 1 to {PAGE_MAX} (default {PAGE_DEFAULT})",
        ),
        CURSOR,
    ]


def page_schema(feed: Feed, name: str):
    return inline_serializer(
        f"{name}Page",
        {
            "object": serializers.ChoiceField(choices=["list"]),
            "column_set": serializers.CharField(help_text=f"the columns' version: {feed.column_set}"),
            "data": feed.schema_rows(f"{name}Row"),
            "next": next_link(),
        },
    )


def json_page(request, feed: Feed, query_class) -> Response:
    query = list_query(query_class, request)
    limit = page_limit(request, PAGE_DEFAULT, PAGE_MAX)
    f = row_filter(request.user.merchant.pk, query)
    token = request.query_params.get("cursor")
    if token:
        f = RowFilter(**{**f.__dict__, "after": feed.decode(token)})
    rows = list(feed.rows(f, limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    next_url = None
    if more:
        next_url = replace_query_param(
            request.build_absolute_uri(), "cursor", feed.encode(rows[-1]["_position"])
        )
    data = [json_row(r, feed.columns) for r in rows]
    response = Response({"object": "list", "column_set": feed.column_set, "data": data, "next": next_url})
    response[COLUMN_SET_HEADER] = feed.column_set
    return response


def csv_download(request, feed: Feed, query_class):
    query = list_query(query_class, request)
    label = "-".join(
        query[k].astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if k in query else "all" for k in ("from", "to")
    )
    f = row_filter(request.user.merchant.pk, query)
    if feed.csv is not None:
        body = feed.csv(f)
    else:
        body = csv_lines(feed.columns, csv_rows(feed.rows(f), feed.columns, feed.lists))
    response = csv_download_response(csv_filename(label, feed.column_set), body)
    response[COLUMN_SET_HEADER] = feed.column_set
    return response


class ReconciliationJsonView(APIView):
    read_scope = "reports:read"

    @extend_schema(
        parameters=[ReconciliationQuery, *page_parameters()],
        responses={200: page_schema(RECONCILIATION, "Reconciliation"), **ERRORS},
        summary="The per-order reconciliation, a page of rows (oldest payment first)",
        operation_id="v1_reports_reconciliation_json",
    )
    def get(self, request):
        return json_page(request, RECONCILIATION, ReconciliationQuery)


class MovementsJsonView(APIView):
    read_scope = "reports:read"

    @extend_schema(
        parameters=[RangeQuery, *page_parameters()],
        responses={200: page_schema(MOVEMENTS, "Movements"), **ERRORS},
        summary="Every settlement leg and refund of your payments, a page of rows (in the order seen)",
        operation_id="v1_reports_movements_json",
    )
    def get(self, request):
        return json_page(request, MOVEMENTS, RangeQuery)


class MovementsCsvView(APIView):
    read_scope = "reports:read"

    @extend_schema(
        parameters=[RangeQuery],
        responses={(200, "text/csv"): bytes, **ERRORS},
        summary="Every settlement leg and refund of your payments as CSV, the whole range streamed",
        operation_id="v1_reports_movements_csv",
    )
    def get(self, request):
        return csv_download(request, MOVEMENTS, RangeQuery)


class TotalsQuery(ReconciliationQuery):
    preset = serializers.ChoiceField(
        choices=PRESETS,
        required=False,
        help_text="instead of from/to: today, 7d (with today), this_month (the default), last_month; "
        "a from/to range spans at most 366 days",
    )
    group = serializers.ChoiceField(
        choices=["day", "range"], required=False, help_text="totals per day (default) or over the whole range"
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if "preset" in attrs and ("from" in attrs or "to" in attrs):
            raise serializers.ValidationError(
                {"preset": [serializers.ErrorDetail("a preset or from/to, not both", code="invalid_range")]}
            )
        now = timezone.now()
        if "preset" in attrs:
            attrs["from"], attrs["to"] = preset_range(attrs["preset"], now)
        elif "from" not in attrs and "to" not in attrs:
            attrs["from"], attrs["to"] = preset_range("this_month", now)  # the default: this month
        start, end = attrs.get("from"), attrs.get("to") or now
        if start is None or end - start > MAX_TOTALS_SPAN:
            raise serializers.ValidationError(
                {
                    "from": [
                        serializers.ErrorDetail(
                            f"totals cover at most {MAX_TOTALS_SPAN.days} days: give `from` (and `to`)",
                            code="range_too_long",
                        )
                    ]
                }
            )
        return attrs


AMOUNT = serializers.CharField(help_text="a decimal string in the asset's units")
PER_CURRENCY = serializers.DictField(child=serializers.CharField(), help_text="currency -> decimal string")


class ReportTotalsView(APIView):
    read_scope = "reports:read"

    @extend_schema(
        parameters=[TotalsQuery],
        responses={
            200: inline_serializer(
                "ReconciliationTotals",
                {
                    "object": serializers.CharField(help_text='always "totals"'),
                    "column_set": serializers.CharField(),
                    "from": serializers.DateTimeField(allow_null=True),
                    "to": serializers.DateTimeField(allow_null=True),
                    "data": inline_serializer(
                        "ReconciliationTotalsGroup",
                        {
                            "merchant_id": serializers.CharField(),
                            "day": serializers.CharField(allow_null=True, help_text="YYYY-MM-DD (UTC)"),
                            "asset": serializers.CharField(allow_null=True),
                            "network": serializers.CharField(allow_null=True),
                            "payments": serializers.IntegerField(),
                            **{name: AMOUNT for name in ASSET_AMOUNTS},
                            "network_fees": PER_CURRENCY,
                            **{name: PER_CURRENCY for name, _ in FIAT_AMOUNTS},
                            "paid_without_value": serializers.IntegerField(),
                            "statuses": serializers.DictField(child=serializers.IntegerField()),
                        },
                        many=True,
                    ),
                },
            ),
            **ERRORS,
        },
        summary="Totals of the reconciliation per day, asset and network (or over the range)",
        operation_id="v1_reports_totals",
    )
    def get(self, request):
        query = list_query(TotalsQuery, request)
        rows = reconciliation_rows(row_filter(request.user.merchant.pk, query))
        return Response(
            {
                "object": "totals",
                "column_set": COLUMN_SET,
                "from": query.get("from"),
                "to": query.get("to"),
                "data": totals(rows, by_day=query.get("group", "day") == "day"),
            }
        )


class ReconciliationCsvView(APIView):
    read_scope = "reports:read"

    @extend_schema(
        parameters=[ReconciliationQuery],
        responses={(200, "text/csv"): bytes, **ERRORS},
        summary="The per-order reconciliation as CSV, the whole range streamed (oldest payment first)",
        operation_id="v1_reports_reconciliation_csv",
    )
    def get(self, request):
        return csv_download(request, RECONCILIATION, ReconciliationQuery)

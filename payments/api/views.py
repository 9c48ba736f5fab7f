"""Merchant API views: parse, call one service, render. No business rules here."""

from __future__ import annotations

import time

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.metrics import INTENT_CREATE_SECONDS, INTENTS_CREATED
from payments import services
from payments.errors import InvalidRequest, NotFound
from payments.models import NetworkAsset
from payments.selectors import (
    intent_get_for_merchant,
    intent_queryset,
    intent_representation,
    intents_deadlines,
    intents_transactions,
)

from .idempotency import RecordSlot, idempotent
from .serializers import (
    ErrorSerializer,
    FulfilmentSerializer,
    PaymentIntentCreateSerializer,
    PaymentIntentListQuery,
    PaymentIntentSerializer,
    SelectAssetSerializer,
    list_of,
    next_link,
    validated,
)

ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    409: ErrorSerializer,
    413: ErrorSerializer,
    422: ErrorSerializer,
    429: ErrorSerializer,
    503: ErrorSerializer,  # rate_unavailable: the fiat rate source did not answer; retry later
}
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    OpenApiParameter.HEADER,
    required=False,
    description="Any printable text up to 255 characters, unique per operation you mean once (an order "
    "id and attempt). Same key and body within 24 h: the original response, replayed. Same key, other "
    "body: 422 `idempotency_key_reused`. Same key while the first request runs: 409.",
)
LIMIT = OpenApiParameter(
    "limit", {"type": "integer", "minimum": 1, "maximum": 100}, description="page size, 1 to 100 (default 20)"
)


PAGE_MAX = 100


def page_limit(request, default: int, maximum: int = PAGE_MAX) -> int:
    """The `limit` query parameter: a whole number from 1 to `maximum` (400 otherwise, an empty one too:
    the schema says integer; never clamped)."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(
            f"limit is a whole number from 1 to {maximum}", code="invalid_parameter", param="limit"
        )
    return int(raw)


class StrictCursorPagination(CursorPagination):
    """A cursor that cannot be decoded is a 400 `invalid_cursor` (DRF answers 404); a `limit` out of range
    is a 400."""

    def get_page_size(self, request):
        return page_limit(request, self.page_size, self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            raise InvalidRequest("the cursor is not valid", code="invalid_cursor", param="cursor") from None


class IntentCursorPagination(StrictCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100

    def get_paginated_response(self, data):
        return Response(
            {
                "object": "list",
                "data": data,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
            }
        )


def _rendered(intent) -> dict:
    """The representation the service built for the version it just wrote, else a fresh one."""
    return intent.representation or intent_representation(intent)


def _network_asset(asset_code: str, network_code: str) -> NetworkAsset:
    return services.network_asset_resolve(asset_code=asset_code, network_code=network_code)


class PaymentIntentListCreateView(APIView):
    def dispatch(self, request, *args, **kwargs):
        if request.method != "POST":
            return super().dispatch(request, *args, **kwargs)
        started = time.perf_counter()
        response = super().dispatch(request, *args, **kwargs)
        INTENT_CREATE_SECONDS.labels(str(response.status_code)).observe(time.perf_counter() - started)
        return response

    @extend_schema(
        request=PaymentIntentCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: PaymentIntentSerializer, **ERRORS},
        summary="Create a payment intent",
    )
    def post(self, request):
        merchant = request.user.merchant

        def create(record: RecordSlot | None) -> Response:
            data = validated(PaymentIntentCreateSerializer, request.data)
            network_asset = _network_asset(data["asset"], data["network"]) if "asset" in data else None
            intent = services.payment_intent_create(
                merchant=merchant,
                data=services.IntentInput(
                    price_amount=data["amount"],
                    price_currency=data["currency"],
                    network_asset=network_asset,
                    merchant_order_id=data["merchant_order_id"],
                    customer_id=data["customer_id"],
                    expires_in_minutes=data.get("expires_in_minutes"),
                    success_url=data["success_url"],
                    cancel_url=data["cancel_url"],
                    metadata=data["metadata"],
                ),
                now=timezone.now(),
                # the idempotency record, with this answer, in the create's own statement
                beside=record.answering(status.HTTP_201_CREATED) if record is not None else None,
            )
            chosen = (network_asset.network.code, network_asset.asset.code) if network_asset else ("", "")
            transaction.on_commit(INTENTS_CREATED.labels(*chosen).inc)
            return Response(_rendered(intent), status=status.HTTP_201_CREATED)

        return idempotent(request, merchant, create, slot=True)

    @extend_schema(
        parameters=[
            PaymentIntentListQuery,
            LIMIT,
            OpenApiParameter("cursor", str, description="from a `next` or `previous` link"),
        ],
        responses={
            200: list_of(
                "PaymentIntentList", PaymentIntentSerializer, next=next_link(), previous=next_link()
            ),
            **ERRORS,
        },
        summary="List payment intents",
        operation_id="v1_payment_intents_list",
    )
    def get(self, request):
        # A plain dict, not the QueryDict: DRF reads an empty form value as absent, so `created_lt=` would
        # silently filter nothing instead of being refused.
        params = request.query_params
        query = PaymentIntentListQuery(
            data={name: params.getlist(name) if name == "state" else params[name] for name in params}
        )
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        intents = intent_queryset().filter(merchant=request.user.merchant)
        if filters.get("state"):
            intents = intents.filter(state__in=filters["state"])
        for name in ("merchant_order_id", "customer_id"):
            if name in filters:
                intents = intents.filter(**{name: filters[name]})
        if "created_gte" in filters:
            intents = intents.filter(created_at__gte=filters["created_gte"])
        if "created_lt" in filters:
            intents = intents.filter(created_at__lt=filters["created_lt"])
        paginator = IntentCursorPagination()
        page = paginator.paginate_queryset(intents, request, view=self)
        transactions, deadlines = intents_transactions(page), intents_deadlines(page)
        return paginator.get_paginated_response(
            [intent_representation(i, transactions[i.pk], deadlines[i.pk]) for i in page]
        )


class PaymentIntentDetailView(APIView):
    @extend_schema(responses={200: PaymentIntentSerializer, **ERRORS}, summary="Retrieve a payment intent")
    def get(self, request, intent_id: str):
        intent = intent_get_for_merchant(merchant=request.user.merchant, intent_id=intent_id)
        if intent is None:
            raise NotFound(f"no payment intent {intent_id}", code="intent_not_found")
        return Response(intent_representation(intent))


class PaymentIntentCancelView(APIView):
    @extend_schema(
        request=None,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: PaymentIntentSerializer, **ERRORS},
        summary="Cancel a payment intent",
    )
    def post(self, request, intent_id: str):
        merchant = request.user.merchant

        def cancel():
            intent = services.payment_intent_cancel(
                merchant=merchant, intent_id=intent_id, now=timezone.now()
            )
            return Response(_rendered(intent))

        return idempotent(request, merchant, cancel)


class PaymentIntentFulfilmentView(APIView):
    @extend_schema(
        request=FulfilmentSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: PaymentIntentSerializer, **ERRORS},
        summary="Report the order of a paid intent fulfilled (once; event payment.fulfilled)",
    )
    def post(self, request, intent_id: str):
        merchant = request.user.merchant

        def fulfil():
            parsed = FulfilmentSerializer(data=request.data)
            parsed.is_valid(raise_exception=True)
            intent = services.payment_intent_fulfil(
                merchant=merchant,
                intent_id=intent_id,
                reference=parsed.validated_data["reference"],
                now=timezone.now(),
            )
            return Response(_rendered(intent))

        return idempotent(request, merchant, fulfil)


class PaymentIntentSelectAssetView(APIView):
    @extend_schema(
        request=SelectAssetSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: PaymentIntentSerializer, **ERRORS},
        summary="Choose the asset and network of an intent created without them",
    )
    def post(self, request, intent_id: str):
        merchant = request.user.merchant

        def select():
            serializer = SelectAssetSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            network_asset = _network_asset(
                serializer.validated_data["asset"], serializer.validated_data["network"]
            )
            intent = services.payment_intent_select_asset(
                merchant=merchant, intent_id=intent_id, network_asset=network_asset, now=timezone.now()
            )
            return Response(_rendered(intent))

        return idempotent(request, merchant, select)

"""Refunds (create, list, get, cancel; scopes refunds:write / refunds:read) and settlements (list, get;
scope settlements:read) in the merchant API. Parse, call one service, render."""

from __future__ import annotations

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import services
from payments.errors import InvalidRequest, NotFound
from payments.models import Refund
from payments.selectors_refunds import qr_svg, refund_payment_uri, refund_representation
from payments.selectors_settlements import settlement_representation, settlements_for_merchant

from .idempotency import idempotent
from .refund_serializers import (
    RefundCreateSerializer,
    RefundListQuery,
    RefundSerializer,
    SettlementListQuery,
    SettlementSerializer,
)
from .serializers import list_of, next_link
from .views import ERRORS, IDEMPOTENCY_HEADER, LIMIT, IntentCursorPagination

CURSOR = OpenApiParameter("cursor", str, description="from a `next` or `previous` link")


def _refund(merchant, refund_id: str) -> Refund:
    refund = (
        Refund.objects.select_related("network_asset__asset", "network_asset__network", "observation")
        .filter(merchant=merchant, pk=refund_id)
        .first()
    )
    if refund is None:
        raise NotFound(f"no refund {refund_id}", code="refund_not_found")
    return refund


def list_query(serializer_class, request):
    """The list's filters; an unknown query parameter (a typo) is a 400, not silently ignored."""
    unknown = sorted(set(request.query_params) - set(serializer_class().fields) - {"limit", "cursor"})
    if unknown:
        raise InvalidRequest(
            f"unknown parameter {unknown[0]!r}", code="unknown_parameter", param=unknown[0][:100]
        )
    query = serializer_class(data={name: request.query_params[name] for name in request.query_params})
    query.is_valid(raise_exception=True)
    return query.validated_data


class RefundListCreateView(APIView):
    read_scope = "refunds:read"
    write_scope = "refunds:write"

    @extend_schema(
        request=RefundCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: RefundSerializer, **ERRORS},
        summary="Refund a payment (paid from your own wallet; the gateway verifies it on chain)",
    )
    def post(self, request):
        merchant = request.user.merchant

        def create():
            parsed = RefundCreateSerializer(data=request.data)
            parsed.is_valid(raise_exception=True)
            data = parsed.validated_data
            if not merchant.intents.filter(pk=data["payment_intent"]).exists():
                raise NotFound(f"no payment intent {data['payment_intent']}", code="intent_not_found")
            refund = services.refund_create(
                intent_id=data["payment_intent"],
                amount_kind=data["amount"]["kind"],
                value=data["amount"].get("value"),
                currency=data["amount"].get("currency"),
                reason=data["reason"],
                destination=data.get("destination", ""),
                requested_by=f"api:{request.auth.prefix}",
                approved=True,  # the merchant's own decision
                now=timezone.now(),
            )
            return Response(refund_representation(refund), status=status.HTTP_201_CREATED)

        return idempotent(request, merchant, create)

    @extend_schema(
        parameters=[RefundListQuery, LIMIT, CURSOR],
        responses={
            200: list_of("RefundList", RefundSerializer, next=next_link(), previous=next_link()),
            **ERRORS,
        },
        summary="List refunds",
        operation_id="v1_refunds_list",
    )
    def get(self, request):
        filters = list_query(RefundListQuery, request)
        refunds = Refund.objects.select_related(
            "network_asset__asset", "network_asset__network", "observation"
        ).filter(merchant=request.user.merchant)
        if "payment_intent" in filters:
            refunds = refunds.filter(intent_id=filters["payment_intent"])
        if "state" in filters:
            refunds = refunds.filter(state=filters["state"])
        paginator = IntentCursorPagination()
        page = paginator.paginate_queryset(refunds, request, view=self)
        return paginator.get_paginated_response([refund_representation(r) for r in page])


class RefundDetailView(APIView):
    read_scope = "refunds:read"

    @extend_schema(responses={200: RefundSerializer, **ERRORS}, summary="Retrieve a refund")
    def get(self, request, refund_id: str):
        return Response(refund_representation(_refund(request.user.merchant, refund_id)))


class RefundQrView(APIView):
    read_scope = "refunds:read"

    @extend_schema(
        responses={(200, "image/svg+xml"): bytes, **ERRORS},
        summary="The QR code of the refund's payment URI (SVG), for a phone wallet to scan",
    )
    def get(self, request, refund_id: str):
        refund = _refund(request.user.merchant, refund_id)
        uri = refund_payment_uri(refund)
        if uri is None:
            raise NotFound(
                "the refund has no destination yet: nothing to pay", code="refund_without_destination"
            )
        return HttpResponse(qr_svg(uri), content_type="image/svg+xml")


class RefundCancelView(APIView):
    write_scope = "refunds:write"

    @extend_schema(
        request=None,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: RefundSerializer, **ERRORS},
        summary="Cancel a refund no payment has been seen for",
    )
    def post(self, request, refund_id: str):
        merchant = request.user.merchant

        def cancel():
            refund = _refund(merchant, refund_id)
            refund = services.refund_cancel(
                refund_id=refund.pk, canceled_by=f"api:{request.auth.prefix}", now=timezone.now()
            )
            return Response(refund_representation(refund))

        return idempotent(request, merchant, cancel)


class SettlementListView(APIView):
    read_scope = "settlements:read"

    @extend_schema(
        parameters=[SettlementListQuery, LIMIT, CURSOR],
        responses={
            200: list_of("SettlementList", SettlementSerializer, next=next_link(), previous=next_link()),
            **ERRORS,
        },
        summary="List settlements (money moved out of your payment addresses)",
        operation_id="v1_settlements_list",
    )
    def get(self, request):
        filters = list_query(SettlementListQuery, request)
        settlements = settlements_for_merchant(request.user.merchant)
        if "payment_intent" in filters:
            settlements = settlements.filter(legs__intent_id=filters["payment_intent"]).distinct()
        if "kind" in filters:
            settlements = settlements.filter(kind=filters["kind"])
        paginator = IntentCursorPagination()
        page = paginator.paginate_queryset(settlements, request, view=self)
        return paginator.get_paginated_response([settlement_representation(s) for s in page])


class SettlementDetailView(APIView):
    read_scope = "settlements:read"

    @extend_schema(
        responses={200: SettlementSerializer, **ERRORS}, summary="Retrieve a settlement with its legs"
    )
    def get(self, request, settlement_id: str):
        settlement = settlements_for_merchant(request.user.merchant).filter(pk=settlement_id).first()
        if settlement is None:
            raise NotFound(f"no settlement {settlement_id}", code="settlement_not_found")
        return Response(settlement_representation(settlement))

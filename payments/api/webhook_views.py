"""Merchant API for webhooks and events: endpoints (`webhooks:*` scopes), the delivery log, replay,
and the events catch-up list (`payments:read`). Parse, call one service, render."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from payments.errors import InvalidRequest, NotFound
from payments.models import Event, WebhookDelivery
from payments.webhooks import endpoints
from payments.webhooks.events import (
    EVENT_TYPES,
    delivery_representation,
    endpoint_representation,
    event_envelope,
)

from .idempotency import idempotent
from .serializers import (
    EventSerializer,
    RedeliverSerializer,
    ReplaySerializer,
    RotateSecretSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    list_of,
    next_link,
)
from .views import ERRORS, IDEMPOTENCY_HEADER, LIMIT, StrictCursorPagination, page_limit

EVENTS_PAGE_MAX = 100


def _requested_by(request) -> str:
    return f"api:{request.auth.prefix}"


class _WebhookScopes:
    read_scope = "webhooks:read"
    write_scope = "webhooks:write"


class WebhookEndpointListView(_WebhookScopes, APIView):
    @extend_schema(
        responses={200: list_of("WebhookEndpointList", WebhookEndpointSerializer), **ERRORS},
        summary="List endpoints",
        operation_id="v1_webhook_endpoints_list",
    )
    def get(self, request):
        found = request.user.merchant.webhook_endpoints.filter(deleted_at__isnull=True).order_by("created_at")
        return Response({"object": "list", "data": [endpoint_representation(e) for e in found]})

    @extend_schema(
        request=WebhookEndpointCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: WebhookEndpointSerializer, **ERRORS},
        summary="Add a webhook endpoint (the answer holds its secret, shown this once)",
    )
    def post(self, request):
        merchant = request.user.merchant

        def create():
            parsed = WebhookEndpointCreateSerializer(data=request.data)
            parsed.is_valid(raise_exception=True)
            endpoint, secret = endpoints.endpoint_create(
                merchant=merchant, now=timezone.now(), **parsed.validated_data
            )
            return Response(endpoint_representation(endpoint, secret), status=status.HTTP_201_CREATED)

        return idempotent(request, merchant, create)


class WebhookEndpointDetailView(_WebhookScopes, APIView):
    @extend_schema(responses={200: WebhookEndpointSerializer, **ERRORS}, summary="Retrieve an endpoint")
    def get(self, request, endpoint_id: str):
        endpoint = endpoints.endpoint_get_for_merchant(
            merchant=request.user.merchant, endpoint_id=endpoint_id
        )
        return Response(endpoint_representation(endpoint))

    @extend_schema(
        request=WebhookEndpointUpdateSerializer,
        responses={200: WebhookEndpointSerializer, **ERRORS},
        summary="Change an endpoint's URL, event types, description, or enable/disable it",
    )
    def patch(self, request, endpoint_id: str):
        endpoint = endpoints.endpoint_get_for_merchant(
            merchant=request.user.merchant, endpoint_id=endpoint_id
        )
        parsed = WebhookEndpointUpdateSerializer(data=request.data)
        parsed.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_update(endpoint=endpoint, now=timezone.now(), **parsed.validated_data)
        return Response(endpoint_representation(endpoint))

    @extend_schema(request=None, responses={204: None, **ERRORS}, summary="Delete an endpoint")
    def delete(self, request, endpoint_id: str):
        endpoint = endpoints.endpoint_get_for_merchant(
            merchant=request.user.merchant, endpoint_id=endpoint_id
        )
        endpoints.endpoint_delete(endpoint=endpoint, now=timezone.now())
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointRotateView(_WebhookScopes, APIView):
    @extend_schema(
        request=RotateSecretSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: WebhookEndpointSerializer, **ERRORS},
        summary="Rotate the signing secret; the old one keeps signing for the overlap",
    )
    def post(self, request, endpoint_id: str):
        merchant = request.user.merchant

        def rotate():
            endpoint = endpoints.endpoint_get_for_merchant(merchant=merchant, endpoint_id=endpoint_id)
            parsed = RotateSecretSerializer(data=request.data)
            parsed.is_valid(raise_exception=True)
            secret = endpoints.endpoint_secret_rotate(
                endpoint=endpoint,
                overlap=timedelta(hours=parsed.validated_data["overlap_hours"]),
                now=timezone.now(),
            )
            return Response(endpoint_representation(endpoint, secret))

        return idempotent(request, merchant, rotate)


class WebhookEndpointReplayView(_WebhookScopes, APIView):
    @extend_schema(
        request=ReplaySerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            202: inline_serializer("ReplayQueued", {"queued": serializers.IntegerField()}),
            **ERRORS,
        },
        summary="Send again every event of a time range to this endpoint",
    )
    def post(self, request, endpoint_id: str):
        merchant = request.user.merchant

        def replay():
            endpoint = endpoints.endpoint_get_for_merchant(merchant=merchant, endpoint_id=endpoint_id)
            parsed = ReplaySerializer(data=request.data)
            parsed.is_valid(raise_exception=True)
            queued = endpoints.endpoint_replay(
                endpoint=endpoint,
                now=timezone.now(),
                requested_by=_requested_by(request),
                **parsed.validated_data,
            )
            return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)

        return idempotent(request, merchant, replay)


class DeliveryPagination(StrictCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100

    def get_paginated_response(self, data):
        return Response({"object": "list", "data": data, "next": self.get_next_link()})


class WebhookEndpointDeliveriesView(_WebhookScopes, APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=WebhookDelivery.State.values),
            LIMIT,
            OpenApiParameter("cursor", str, description="from a `next` link"),
        ],
        responses={
            200: list_of("WebhookDeliveryPage", WebhookDeliverySerializer, next=next_link()),
            **ERRORS,
        },
        summary="The endpoint's delivery log, newest first",
    )
    def get(self, request, endpoint_id: str):
        endpoint = endpoints.endpoint_get_for_merchant(
            merchant=request.user.merchant, endpoint_id=endpoint_id
        )
        deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).prefetch_related("attempt_log")
        state = request.query_params.get("state")
        if state:
            if state not in WebhookDelivery.State.values:
                raise InvalidRequest(
                    f"state is one of {', '.join(WebhookDelivery.State.values)}",
                    code="invalid_parameter",
                    param="state",
                )
            deliveries = deliveries.filter(state=state)
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response([delivery_representation(d) for d in page])


def _event_for_merchant(request, event_id: str) -> Event:
    event = Event.objects.filter(merchant=request.user.merchant, pk=event_id).first()
    if event is None:
        raise NotFound(f"no event {event_id}", code="event_not_found")
    return event


def _types(request) -> list[str]:
    types = [
        t.strip() for value in request.query_params.getlist("type") for t in value.split(",") if t.strip()
    ]
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidRequest(f"unknown event types {unknown}", code="unknown_event_type", param="type")
    return types


class EventListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("after", str, description="the id of the last event you processed"),
            OpenApiParameter("type", str, many=True, description="only these types (repeat, or commas)"),
            OpenApiParameter("payment_intent", str, description="only this payment's events"),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": EVENTS_PAGE_MAX},
                description=f"1 to {EVENTS_PAGE_MAX}; default 50",
            ),
        ],
        responses={
            200: list_of("EventList", EventSerializer, has_more=serializers.BooleanField(), next=next_link()),
            **ERRORS,
        },
        summary="Events in the order they were dispatched, oldest first: page with `after`",
        operation_id="v1_events_list",
    )
    def get(self, request):
        merchant = request.user.merchant
        limit = page_limit(request, 50, EVENTS_PAGE_MAX)
        events = Event.objects.filter(merchant=merchant, position__isnull=False)
        after = request.query_params.get("after")
        if after:
            position = (
                Event.objects.filter(merchant=merchant, pk=after).values_list("position", flat=True).first()
            )
            if position is None:
                raise InvalidRequest(f"no dispatched event {after}", code="invalid_cursor", param="after")
            events = events.filter(position__gt=position)
        types = _types(request)
        if types:
            events = events.filter(type__in=types)
        if request.query_params.get("payment_intent"):
            events = events.filter(intent_id=request.query_params["payment_intent"])
        page = list(events.order_by("position")[: limit + 1])
        has_more = len(page) > limit
        page = page[:limit]
        next_link = None
        if has_more:
            query = request.query_params.copy()
            query["after"] = page[-1].id
            next_link = request.build_absolute_uri(request.path) + "?" + urlencode(query, doseq=True)
        return Response(
            {
                "object": "list",
                "data": [event_envelope(e) for e in page],
                "has_more": has_more,
                "next": next_link,
            }
        )


class EventDetailView(APIView):
    @extend_schema(responses={200: EventSerializer, **ERRORS}, summary="Retrieve an event")
    def get(self, request, event_id: str):
        return Response(event_envelope(_event_for_merchant(request, event_id)))


class EventDeliveriesView(APIView):
    read_scope = "webhooks:read"

    @extend_schema(
        responses={200: list_of("WebhookDeliveryList", WebhookDeliverySerializer), **ERRORS},
        summary="Every delivery of the event, with its attempts",
    )
    def get(self, request, event_id: str):
        event = _event_for_merchant(request, event_id)
        deliveries = event.deliveries.order_by("created_at", "id").prefetch_related("attempt_log")
        return Response({"object": "list", "data": [delivery_representation(d) for d in deliveries]})


class EventRedeliverView(APIView):
    write_scope = "webhooks:write"

    @extend_schema(
        request=RedeliverSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: list_of("WebhookDeliveriesQueued", WebhookDeliverySerializer), **ERRORS},
        summary="Send the event again (same webhook-id)",
    )
    def post(self, request, event_id: str):
        merchant = request.user.merchant

        def redeliver():
            event = _event_for_merchant(request, event_id)
            parsed = RedeliverSerializer(data=request.data)
            parsed.is_valid(raise_exception=True)
            endpoint = None
            if "endpoint_id" in parsed.validated_data:
                endpoint = endpoints.endpoint_get_for_merchant(
                    merchant=merchant, endpoint_id=parsed.validated_data["endpoint_id"]
                )
            queued = endpoints.event_redeliver(
                event=event, endpoint=endpoint, now=timezone.now(), requested_by=_requested_by(request)
            )
            return Response(
                {"object": "list", "data": [delivery_representation(d) for d in queued]},
                status=status.HTTP_202_ACCEPTED,
            )

        return idempotent(request, merchant, redeliver)

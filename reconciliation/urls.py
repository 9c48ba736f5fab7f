from django.urls import path

from . import api

urlpatterns = [
    path(
        "reports/reconciliation.json", api.ReconciliationJsonView.as_view(), name="report-reconciliation-json"
    ),
    path("reports/totals", api.ReportTotalsView.as_view(), name="report-totals"),
    path("reports/movements.json", api.MovementsJsonView.as_view(), name="report-movements-json"),
    path("reports/movements.csv", api.MovementsCsvView.as_view(), name="report-movements-csv"),
    path("reports/reconciliation.csv", api.ReconciliationCsvView.as_view(), name="report-reconciliation-csv"),
]

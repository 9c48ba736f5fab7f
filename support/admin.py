"""The support app's pages in the admin, one module per noun: cases (support/admin_cases.py, worked from
their page), the audit log (admin_audit.py, read-only, exported by auditors), approvals and merchant
policies (admin_approvals.py), the payment page (admin_payments.py) and its actions (actions_*.py, refunds in actions_refunds.py). The
console's queues are on the admin index (support/queues.py, templates/admin/index.html)."""

from __future__ import annotations

from django.contrib import admin

from . import (  # noqa: F401 (register the console's pages and actions)
    actions_dangerous,
    actions_refunds,
    admin_approvals,
    admin_audit,
    admin_config,
    admin_payments,
    admin_refunds,
    admin_treasury,
    admin_wallets,
)
from .admin_cases import SupportCaseAdmin
from .models import SupportCase

admin.site.register(SupportCase, SupportCaseAdmin)

"""The support console: audit log checkpoints, support cases, four-eyes approvals (their beat entries:
queues.py)."""

from gateway.env import env_number

from .core import env_list

# The audit log's checkpoints (support/audit.py): HMAC keys, comma-separated, the first signs and all
# verify (list a new key first, keep the old while its checkpoints matter); without them a key derived from
# DJANGO_SECRET_KEY signs, so set them before ever rotating the secret key. The beat signs the chain's
# head every GATEWAY_AUDIT_CHECKPOINT_S seconds.
GATEWAY_AUDIT_KEYS = env_list("GATEWAY_AUDIT_KEYS")
GATEWAY_AUDIT_CHECKPOINT_S = env_number("GATEWAY_AUDIT_CHECKPOINT_S", 60.0, positive=True)
# Support cases (support/cases.py): opened from the event stream every GATEWAY_CASES_POLL_S seconds, due
# GATEWAY_CASE_DUE_HOURS after they open.
GATEWAY_CASES_POLL_S = env_number("GATEWAY_CASES_POLL_S", 5.0, positive=True)
GATEWAY_CASE_DUE_HOURS = env_number("GATEWAY_CASE_DUE_HOURS", 24.0, positive=True)
# Four-eyes (support/approvals.py): an approval request expires GATEWAY_APPROVAL_TTL_HOURS after it is
# made; the beat marks expired requests every minute (they are kept, and audited).
GATEWAY_APPROVAL_TTL_HOURS = env_number("GATEWAY_APPROVAL_TTL_HOURS", 24.0, positive=True)

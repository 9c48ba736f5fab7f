"""`manage.py revoke_role USER ROLE [--merchant M ...]`: with merchants, withdraw those merchants (the
role stays); without, take the role away (a user left with no role loses every merchant grant too)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from support.roles import COMMAND_ACTOR, ROLES, RoleError, role_revoke


class Command(BaseCommand):
    help = "Take a role, or some merchants, away from a staff user."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", choices=ROLES)
        parser.add_argument(
            "--merchant", action="append", default=[], metavar="M", help="a merchant id; repeat for more"
        )

    def handle(self, *args, username, role, merchant, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        try:
            merchants = role_revoke(user=user, role=role, merchant_ids=merchant, actor=COMMAND_ACTOR)
        except RoleError as exc:
            raise CommandError(str(exc)) from exc
        roles = sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        scope = ", ".join(m.pk for m in merchants) or "none"
        self.stdout.write(f"{username}: roles {', '.join(roles) or 'none'}; merchants: {scope}")

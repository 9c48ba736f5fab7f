"""`manage.py grant_role USER ROLE [--merchant M ...] [--create] [--email E]`: give a staff user a role
and the merchants it may touch. With --create a missing user is made (staff, not superuser) with the
password in $GATEWAY_STAFF_PASSWORD if set, otherwise a generated one printed once on stdout."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from support.roles import COMMAND_ACTOR, ROLES, RoleError, role_grant

PASSWORD_ENV = "GATEWAY_STAFF_PASSWORD"


class Command(BaseCommand):
    help = "Give a staff user a role (support_agent, support_lead, finance, merchant_admin, auditor) and merchants."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", choices=ROLES)
        parser.add_argument(
            "--merchant", action="append", default=[], metavar="M", help="a merchant id; repeat for more"
        )
        parser.add_argument("--create", action="store_true", help="make the user if it does not exist")
        parser.add_argument("--email", default="", help="the new user's email (with --create)")

    def handle(self, *args, username, role, merchant, create, email, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        generated = None
        if user is None and not create:
            raise CommandError(f"no user {username!r} (add --create to make one)")
        try:
            with transaction.atomic():
                if user is None:
                    given = os.environ.get(PASSWORD_ENV)
                    generated = None if given else secrets.token_urlsafe(18)
                    password = given or generated
                    user = User.objects.create_user(username, email=email, password=password, is_staff=True)
                merchants = role_grant(user=user, role=role, merchant_ids=merchant, actor=COMMAND_ACTOR)
        except RoleError as exc:
            raise CommandError(str(exc)) from exc
        scope = "all (superuser)" if user.is_superuser else ", ".join(m.pk for m in merchants) or "none"
        self.stdout.write(f"{username}: role {role}; merchants: {scope}")
        if generated:
            self.stdout.write(f"password (shown once, change it at first login): {generated}")

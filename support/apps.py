from django.apps import AppConfig


class SupportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "support"
    verbose_name = "Support"

    def ready(self) -> None:
        # Registers the safe payment actions with the console, and the decisions' admin page.
        from . import actions_safe, admin_decisions  # noqa: F401

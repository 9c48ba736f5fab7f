from django.db import migrations, models

# The pools' free addresses get their shown form, in batches each committed on its own (not atomic: a
# single transaction would hold its row locks on the pool, which every create claims from, to the end).
# Claimed addresses are never shown from this column and keep it empty. Then a check that the shown form
# is the stored address (a customer must never be shown an address nobody watches), added NOT VALID and
# validated after, so that no lock stops the writes while existing rows are checked. Each step can run
# again: a migration interrupted half way is finished by running `migrate` again.

BATCH = 2000
CHECK = "address_shown_is_the_address"


def fill_free_addresses(apps, schema_editor):
    from django.db import transaction
    from eth_utils import to_checksum_address

    PaymentAddress = apps.get_model("payments", "PaymentAddress")
    free = PaymentAddress.objects.filter(claimed_at__isnull=True, display_address="")
    while True:
        with transaction.atomic():
            rows = list(free.select_related("wallet").order_by("id")[:BATCH])
            for row in rows:
                evm = row.wallet.chain == "evm"
                row.display_address = to_checksum_address(row.address) if evm else row.address
            PaymentAddress.objects.bulk_update(rows, ["display_address"])
        if len(rows) < BATCH:
            return


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("payments", "0027_paymentaddress_display_address")]

    operations = [
        migrations.RunPython(fill_free_addresses, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"ALTER TABLE payments_paymentaddress DROP CONSTRAINT IF EXISTS {CHECK}; "
                    f"ALTER TABLE payments_paymentaddress ADD CONSTRAINT {CHECK} CHECK "
                    "(display_address = '' OR lower(display_address) = lower(address)) NOT VALID",
                    f"ALTER TABLE payments_paymentaddress DROP CONSTRAINT IF EXISTS {CHECK}",
                ),
                migrations.RunSQL(
                    f"ALTER TABLE payments_paymentaddress VALIDATE CONSTRAINT {CHECK}", migrations.RunSQL.noop
                ),
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="paymentaddress",
                    constraint=models.CheckConstraint(
                        condition=models.Q(display_address="")
                        | models.Q(address__iexact=models.F("display_address")),
                        name=CHECK,
                    ),
                ),
            ],
        ),
    ]

from django.db import migrations, models

# The address as a payer is shown it, stored when it is derived: a create writes its answer in the
# statement that claims the address, and PostgreSQL cannot compute an EIP-55 checksum. A column with a
# database default is added without rewriting the table, and the version still serving during an
# upgrade, which does not name the column, keeps inserting (its addresses get their shown form when a
# create finds one first in the pool: `services.addresses.address_pool_refill`). 0028 fills in the pools.


class Migration(migrations.Migration):
    dependencies = [("payments", "0026_fewer_indexes")]

    operations = [
        migrations.AddField(
            model_name="paymentaddress",
            name="display_address",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
    ]

"""The address pool: addresses derived ahead in batches, claimed in index order, one per intent."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from payments import services
from payments.accounts import wallet_add
from payments.errors import InvalidRequest
from payments.models import Network, NetworkAsset, PaymentAddress
from payments.services.addresses import claim_statement
from payments.wallets import derive_bech32_address, derive_evm_address, parse_account_key
from tests.factories import account_key, make_merchant
from tests.payments.test_services_settle import new_intent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_batches(settings):
    settings.GATEWAY_ADDRESS_POOL_BATCH = 4


def evm_wallet(merchant):
    return merchant.wallets.get(chain="evm")


def test_first_create_derives_a_batch_and_claims_index_0():
    merchant = make_merchant()
    intent = new_intent(merchant)
    wallet = evm_wallet(merchant)
    key = parse_account_key(wallet.account_key)
    assert intent.address.derivation_index == 0
    assert intent.address.address == derive_evm_address(key, 0).lower()
    assert intent.wallet_id == wallet.pk
    assert wallet.next_index == 4
    pool = PaymentAddress.objects.filter(wallet=wallet).order_by("derivation_index")
    assert [(a.derivation_index, a.claimed_at is not None) for a in pool] == [
        (0, True),
        (1, False),
        (2, False),
        (3, False),
    ]
    assert [a.address for a in pool] == [derive_evm_address(key, i).lower() for i in range(4)]


def test_creates_claim_in_index_order_and_top_the_pool_up_before_it_runs_dry():
    merchant = make_merchant()
    indexes, derived = [], []
    for _ in range(7):
        indexes.append(new_intent(merchant).address.derivation_index)
        derived.append(evm_wallet(merchant).next_index)
    assert indexes == list(range(7))
    # Topped up when at most half a batch was left after the claim (index 2 of 0..3, then 6 of 0..7).
    assert derived == [4, 4, 8, 8, 8, 8, 12]
    assert PaymentAddress.objects.filter(claimed_at__isnull=True).count() == 5


def test_a_batch_of_one_still_tops_the_pool_up_before_it_runs_dry(settings):
    # half a batch of 1 is 0 addresses: the create that takes the last free one refills (it waited for
    # an empty pool before)
    settings.GATEWAY_ADDRESS_POOL_BATCH = 1
    merchant = make_merchant()
    derived = []
    for _ in range(3):
        new_intent(merchant)
        derived.append(evm_wallet(merchant).next_index)
    assert derived == [2, 3, 4]
    assert PaymentAddress.objects.filter(wallet=evm_wallet(merchant), claimed_at__isnull=True).count() == 1


def test_an_address_claimed_by_a_create_that_rolls_back_goes_back_to_the_pool():
    merchant = make_merchant()
    first = new_intent(merchant)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        new_intent(merchant)  # claims index 1 ...
        raise Abort  # ... and rolls back, so nobody was ever shown that address
    second = new_intent(merchant)
    assert (first.address.derivation_index, second.address.derivation_index) == (0, 1)


def test_evm_networks_share_one_pool_and_bitcoin_family_networks_have_their_own():
    merchant = make_merchant()
    eth = new_intent(merchant, asset="USDC", network="ethereum")
    pol = new_intent(merchant, asset="USDC", network="polygon")
    btc = new_intent(merchant, asset="BTC", network="bitcoin", amount="0.001")
    ltc = new_intent(merchant, asset="LTC", network="litecoin-regtest", amount="0.5")
    assert (eth.address.derivation_index, pol.address.derivation_index) == (0, 1)
    assert eth.wallet_id == pol.wallet_id
    btc_wallet = merchant.wallets.get(chain="bitcoin")
    assert btc.address.derivation_index == 0
    assert btc.address.address == derive_bech32_address(parse_account_key(btc_wallet.account_key), 0, "bc")
    assert ltc.address.derivation_index == 0
    assert ltc.address.address.startswith("rltc1")
    assert len({eth.wallet_id, btc.wallet_id, ltc.wallet_id}) == 3


def test_a_deactivated_wallets_pool_is_never_claimed():
    merchant = make_merchant()
    new_intent(merchant)
    old = evm_wallet(merchant)
    old.is_active = False
    old.save(update_fields=["is_active"])
    wallet_add(merchant=merchant, chain="evm", account_key=account_key("m/44'/60'/1'"))
    intent = new_intent(merchant)
    assert intent.wallet_id != old.pk
    assert intent.address.derivation_index == 0
    assert PaymentAddress.objects.filter(wallet=old, claimed_at__isnull=True).count() == 3


def test_refill_without_a_wallet_is_a_clear_error():
    merchant = make_merchant(wallets=False)
    network = Network.objects.get(code="ethereum")
    with pytest.raises(InvalidRequest) as raised:
        services.address_pool_refill(merchant_id=merchant.pk, network=network, now=timezone.now())
    assert raised.value.code == "no_wallet_for_network"


def test_the_beat_top_up_keeps_every_active_wallet_near_the_pool_size():
    merchant = make_merchant()
    new_intent(merchant)  # EVM pool: 4 derived, 1 claimed, 3 free
    now = timezone.now()
    derived = services.address_pools_top_up(now=now, size=10)
    # EVM 3 free -> 10; bitcoin and litecoin-regtest wallets had none -> 10 each.
    assert derived == 7 + 10 + 10
    for wallet in merchant.wallets.all():
        assert wallet.addresses.filter(claimed_at__isnull=True).count() == 10
        assert sorted(wallet.addresses.values_list("derivation_index", flat=True)) == list(
            range(wallet.next_index)
        )
    assert services.address_pools_top_up(now=now, size=10) == 0  # nothing below half
    ltc = merchant.wallets.get(chain="litecoin").addresses.order_by("derivation_index").first()
    assert ltc.address.startswith("rltc1")


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("network", ["ethereum", "litecoin-regtest"])
def test_a_claim_reads_one_entry_of_the_pool_however_large_the_pool(network):
    """PostgreSQL's own account of the claim (EXPLAIN ANALYZE): no sort, and one row read from the free
    pool's index. (It once joined the wallet, so the planner sorted the whole free pool per claim.)"""
    merchant = make_merchant()
    network_obj = Network.objects.get(code=network)
    services.address_pool_refill(merchant_id=merchant.pk, network=network_obj, now=timezone.now(), batch=500)
    na = NetworkAsset.objects.select_related("network").filter(network=network_obj).first()
    sql, params = claim_statement(merchant_id=merchant.pk, network_asset=na, now=timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        (plan,) = cursor.fetchone()[0]
        transaction.set_rollback(True)
    nodes = list(_plan_nodes(plan["Plan"]))
    assert not [n for n in nodes if n["Node Type"] == "Sort"]
    pool_reads = [
        n for n in nodes if n.get("Relation Name") == "payments_paymentaddress" and "Scan" in n["Node Type"]
    ]
    assert pool_reads and all(n["Actual Rows"] == 1 for n in pool_reads), pool_reads


def test_the_pool_keeps_each_address_as_a_payer_is_shown_it():
    """EVM: stored lower case, shown EIP-55 checksummed (eth_utils, not the code that derived it);
    Bitcoin-family: shown as stored."""
    from eth_utils import to_checksum_address

    merchant = make_merchant()
    new_intent(merchant)
    new_intent(merchant, asset="LTC", network="litecoin-regtest", amount="0.5")
    rows = list(PaymentAddress.objects.select_related("wallet"))
    assert {row.wallet.chain for row in rows} == {"evm", "litecoin"}
    for row in rows:
        if row.wallet.chain == "evm":
            assert row.address == row.address.lower()
            assert row.display_address == to_checksum_address(row.address) != row.address
        else:
            assert row.display_address == row.address


@pytest.mark.parametrize(
    ("asset", "network", "amount"),
    [("USDC", "ethereum", "10"), ("ETH", "ethereum", "0.01"), ("LTC", "litecoin-regtest", "0.5")],
)
def test_a_creates_answer_and_events_show_the_address_as_every_later_read_does(asset, network, amount):
    """The create's statement fills in the address it claims (in `address` and the payment URI): what
    it answered and stored is what the selectors make of the stored intent."""
    from payments.models import Event, PaymentIntent
    from payments.selectors import INTENT_RELATED, intent_representation

    intent = new_intent(make_merchant(), asset=asset, network=network, amount=amount)
    stored = PaymentIntent.objects.select_related(*INTENT_RELATED).get(pk=intent.pk)
    later = intent_representation(stored)
    assert intent.representation == later
    assert later["address"] in later["payment_uri"]
    payloads = (
        Event.objects.filter(intent_id=intent.pk).order_by("sequence").values_list("payload", flat=True)
    )
    assert [p["address"] for p in payloads] == [later["address"]] * 2
    assert [p["payment_uri"] for p in payloads] == [later["payment_uri"]] * 2


def test_an_address_derived_without_its_shown_form_gets_it_before_it_is_claimed():
    """(Derived by the version before, still serving during an upgrade.) The create's statement claims
    only an address with its shown form; finding one without, it refills, which gives the pool's free
    addresses theirs, and the create shows it checksummed like every later read."""
    from eth_utils import to_checksum_address

    from payments.models import Event, PaymentIntent
    from payments.selectors import INTENT_RELATED, intent_representation

    merchant = make_merchant()
    new_intent(merchant)
    PaymentAddress.objects.filter(claimed_at__isnull=True).update(display_address="")
    intent = new_intent(merchant)
    assert intent.address.derivation_index == 1 and evm_wallet(merchant).next_index == 4  # nothing derived
    shown = to_checksum_address(intent.address.address)
    assert intent.representation["address"] == shown != intent.address.address
    stored = PaymentIntent.objects.select_related(*INTENT_RELATED).get(pk=intent.pk)
    assert intent.representation == intent_representation(stored)
    assert {
        p["address"] for p in Event.objects.filter(intent_id=intent.pk).values_list("payload", flat=True)
    } == {shown}
    assert not PaymentAddress.objects.filter(claimed_at__isnull=True, display_address="").exists()


def test_the_migration_fills_in_the_shown_form_of_the_pools_free_addresses():
    import importlib

    from django.apps import apps
    from eth_utils import to_checksum_address

    migration = importlib.import_module("payments.migrations.0028_paymentaddress_display_address_fill")
    merchant = make_merchant()
    new_intent(merchant)
    new_intent(merchant, asset="LTC", network="litecoin-regtest", amount="0.5")
    PaymentAddress.objects.update(display_address="")
    migration.fill_free_addresses(apps, None)
    rows = list(PaymentAddress.objects.select_related("wallet"))
    assert [row.display_address for row in rows if row.claimed_at is not None] == ["", ""]
    for row in rows:
        if row.claimed_at is None:
            shown = to_checksum_address(row.address) if row.wallet.chain == "evm" else row.address
            assert row.display_address == shown


def test_an_address_is_never_shown_as_another():
    from django.db import IntegrityError

    merchant = make_merchant()
    intent = new_intent(merchant)
    other = PaymentAddress.objects.filter(claimed_at__isnull=True).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentAddress.objects.filter(pk=other.pk).update(display_address=intent.representation["address"])
    PaymentAddress.objects.filter(pk=other.pk).update(display_address=other.address.upper())  # same address


def test_a_top_up_derives_nothing_if_the_pool_grew_since_its_create_looked():
    """A create tops the pool up after its statement, seeing where the pool ended then; a refill since
    (another create's, the beat's) makes its top-up pointless."""
    merchant = make_merchant()
    new_intent(merchant)
    network = Network.objects.get(code="ethereum")
    seen = evm_wallet(merchant).next_index
    assert services.address_pool_refill(merchant_id=merchant.pk, network=network, now=timezone.now()) == 4
    assert (
        services.address_pool_refill(
            merchant_id=merchant.pk, network=network, now=timezone.now(), only_from=seen
        )
        == 0
    )
    assert evm_wallet(merchant).next_index == seen + 4
    now_seen = seen + 4
    assert (
        services.address_pool_refill(
            merchant_id=merchant.pk, network=network, now=timezone.now(), only_from=now_seen
        )
        == 4
    )


def test_a_create_that_finds_the_pool_empty_refills_it_and_claims_from_the_refill():
    merchant = make_merchant()
    new_intent(merchant)
    PaymentAddress.objects.filter(claimed_at__isnull=True).update(claimed_at=timezone.now())
    intent = new_intent(merchant)
    assert intent.address.derivation_index == 4
    assert evm_wallet(merchant).next_index == 8

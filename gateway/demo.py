"""The demo: the gateway on embedded defaults, with a demo merchant, in one command (`scripts/demo`).

Starts (or joins) the embedded PostgreSQL, migrates, sets up a demo merchant with watch-only wallets
(the public keys of the published BIP39 test mnemonic: never send real funds to them), prints a fresh
API key and the URLs, then runs the web server, a Celery worker and Celery beat until Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.env import env_number

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_ENV = {
    "DJANGO_DEBUG": "1",
    "GATEWAY_RATE_SOURCE": "fixed",
    "GATEWAY_FIXED_RATES": (
        "BTC-USD=60000,BTC-EUR=55000,LTC-USD=80,LTC-EUR=74,ETH-USD=3000,ETH-EUR=2750,"
        "POL-USD=0.50,POL-EUR=0.46,USDC-EUR=0.92,USDT-EUR=0.92"
    ),
    # so a receiver on this machine (examples/webhook_receiver) can be an endpoint
    "GATEWAY_WEBHOOK_ALLOW_HTTP": "1",
    "GATEWAY_RETURN_URL_ALLOW_HTTP": "1",
    "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    "GATEWAY_SCAN_INTERVAL_S": "5",
}
DEMO_BLOCK_TIME_S = 1  # the demo's anvil mines a block a second
# Public account keys of the test mnemonic "abandon x11 about" (TOOLING.md vectors).
DEMO_WALLETS = [
    (
        "evm",
        None,
        "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt",
    ),
    (
        "bitcoin",
        "bitcoin-regtest",
        "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M",
    ),
    (
        "litecoin",
        "litecoin-regtest",
        "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M",
    ),
]


def main() -> int:
    from gateway.development import development_environment_use

    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    # generated keys kept under the state directory, plain http on 127.0.0.1 (the demo opts out of HTTPS)
    development_environment_use()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    host = os.environ.get("GATEWAY_DEMO_HOST", "127.0.0.1")
    port = env_number("GATEWAY_DEMO_PORT", 8000, minimum=1, maximum=65535)
    os.environ.setdefault("GATEWAY_PUBLIC_URL", f"http://{host}:{port}")

    import django

    django.setup()  # starts the embedded PostgreSQL when DATABASE_URL is unset, and exports its URL
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    merchant, api_key, admin_password = _demo_setup(Path(settings.STATE_DIR))
    chain = _demo_chain(Path(settings.STATE_DIR))

    python = sys.executable
    children = [
        subprocess.Popen([python, "manage.py", "runserver", "--noreload", f"{host}:{port}"], cwd=BASE_DIR),
        subprocess.Popen(worker_command(python), cwd=BASE_DIR),
        subprocess.Popen(
            [
                python,
                "-m",
                "celery",
                "-A",
                "gateway",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(Path(settings.STATE_DIR) / "celerybeat-schedule"),
            ],
            cwd=BASE_DIR,
        ),
    ]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        base = f"http://{host}:{port}"
        _wait_for(f"{base}/healthz", children)
        _banner(base, merchant, api_key, admin_password, chain)
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.5)
    finally:
        chain.stop()
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed and not stopping else 0


def worker_command(python: str) -> list[str]:
    """The demo's one Celery worker, consuming every queue the settings route work to (`default`, `scan`,
    `webhooks`), on threads."""
    from gateway.worker import command, queues_routed

    return command(queues_routed(), python=python, pool="threads", concurrency=4)


def demo_confirmations(*, scan_interval_s: float, block_time_s: float) -> int:
    """Confirmations the demo's local chain requires, so that every payment is seen `confirming` before
    `paid`. The first scan after a payment's block comes up to one interval later, when the block has up to
    interval/block time + 1 confirmations (+1 for timing jitter); requiring twice the blocks of an interval,
    plus one, leaves the payment `confirming` for at least one more scan."""
    return max(2, math.ceil(2 * scan_interval_s / block_time_s) + 1)


def _demo_setup(state_dir: Path) -> tuple[str, str, str]:
    """Create the demo merchant and its wallets once; a new API key and admin password every start."""
    from django.contrib.auth import get_user_model

    from payments.accounts import api_key_create, merchant_create, wallet_add
    from payments.models import ApiKey, Merchant

    marker = state_dir / "demo.json"
    merchant = None
    if marker.exists():
        merchant = Merchant.objects.filter(pk=json.loads(marker.read_text())["merchant_id"]).first()
    if merchant is None:
        merchant = merchant_create(name="Demo shop")
        for chain, network, key in DEMO_WALLETS:
            wallet_add(merchant=merchant, chain=chain, account_key=key, network_code=network)
        marker.write_text(json.dumps({"merchant_id": merchant.pk}))
    _, secret = api_key_create(merchant=merchant, scopes=list(ApiKey.SCOPES), name="demo")
    password = secrets.token_urlsafe(12)
    User = get_user_model()
    admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
    admin.set_password(password)
    admin.save()
    return merchant.pk, secret, password


DEMO_CHAIN_PORT = env_number("GATEWAY_DEMO_CHAIN_PORT", 8545, minimum=1, maximum=65535)


def _demo_chain(state_dir: Path):
    """A local anvil (chain id 31337, a block a second, state kept under the state directory) with the
    test USDC deployed, `evm-local` pointed at it, and ETH and USDC there requiring `demo_confirmations`."""
    from django.conf import settings

    from devchain.anvil import AnvilNode, deploy_token, free_port, mint, token_units
    from payments.models import Asset, Network, NetworkAsset, ScanCursor

    state_file = state_dir / "anvil-state.json"
    port = DEMO_CHAIN_PORT
    try:
        node = AnvilNode(
            31337, block_time=DEMO_BLOCK_TIME_S, port=port, extra_args=["--state", str(state_file)]
        ).start()
    except Exception:
        port = free_port()
        node = AnvilNode(
            31337, block_time=DEMO_BLOCK_TIME_S, port=port, extra_args=["--state", str(state_file)]
        ).start()
    info_file = state_dir / "demo-chain.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    token_address = info.get("token")
    if not token_address or len(node.w3.eth.get_code(token_address)) == 0:
        token = deploy_token(node.w3, node.accounts[0])
        mint(node.w3, token, node.accounts[0], node.accounts[1], token_units("100000"))
        token_address = token.address
        ScanCursor.objects.filter(network__code="evm-local").delete()  # a new chain: scan it from the start
    network = Network.objects.get(code="evm-local")
    network.rpc_url = node.url
    network.scan_start_height = 0
    network.enabled = True  # development networks start disabled outside the demo
    network.save(update_fields=["rpc_url", "scan_start_height", "enabled"])
    confirmations = demo_confirmations(
        scan_interval_s=settings.GATEWAY_SCAN_INTERVAL_S, block_time_s=DEMO_BLOCK_TIME_S
    )
    NetworkAsset.objects.update_or_create(
        network=network,
        asset=Asset.objects.get(code="USDC"),
        defaults={
            "contract_address": token_address.lower(),
            "decimals": 6,
            "default_confirmations": confirmations,
        },
    )
    NetworkAsset.objects.filter(network=network).update(default_confirmations=confirmations)  # ETH too
    info = {
        "rpc_url": node.url,
        "token": token_address,
        "payer": node.accounts[1],
        "confirmations": confirmations,
    }
    info_file.write_text(json.dumps(info))
    return node


def _wait_for(url: str, children: list[subprocess.Popen], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise SystemExit("a demo process exited during start-up; see its output above")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not answer {url} within {timeout_s:.0f} s")


def _banner(base: str, merchant: str, api_key: str, admin_password: str, chain) -> None:
    body = '{"amount": "25.00", "currency": "USD", "asset": "USDC", "network": "evm-local"}'
    from django.conf import settings

    confirmations = demo_confirmations(
        scan_interval_s=settings.GATEWAY_SCAN_INTERVAL_S, block_time_s=DEMO_BLOCK_TIME_S
    )
    print(
        f"""
================================================================================
 Payment gateway demo is running (Ctrl-C stops it)
   API            {base}/api/v1/payment-intents
   API docs       {base}/api/docs/   (OpenAPI schema: {base}/api/schema/)
   Admin          {base}/admin/   user: admin   password: {admin_password}
   Merchant       {merchant}
   API key        {api_key}
                  (shown once; a new one is made at every start)

 Create a payment intent:
   curl -s -X POST {base}/api/v1/payment-intents \\
     -H 'Authorization: Bearer {api_key}' \\
     -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\
     -d '{body}'

 Local chain    {chain.url} (anvil, chain id 31337, a block a second)
 Pay it from a funded demo account (copy the intent's payment_uri):
   .venv/bin/python -m devchain.pay '<payment_uri>'      # --fraction 0.5 pays half
 then watch the intent: GET {base}/api/v1/payment-intents/<id>  (confirming, then paid after
 {confirmations} confirmations: about {confirmations * DEMO_BLOCK_TIME_S} s)
 Or pay as a customer: open the intent's checkout_url in a browser (create one without "asset" and
 "network" to choose them on the page), then pay the shown payment URI with devchain.pay.
 Webhooks: see docs/WEBHOOKS.md (examples/webhook_receiver registers itself with the key above).
================================================================================
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

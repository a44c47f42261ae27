"""STARTTLS on the SMTP endpoint with a configured certificate."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from models import Message
from standins.mail import SmtpSink
from standins.slack import SlackSandbox
from tests.conftest import SettingsFactory, running
from tests.test_flow_email_to_slack import mail

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_a_client_can_upgrade_to_tls_and_deliver(
    tmp_path: Path, make_settings: SettingsFactory, slack: SlackSandbox, relay: SmtpSink
) -> None:
    cert, key = self_signed(tmp_path)
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"'
    async with running(make_settings, slack, relay, email_extra=tls) as harness:
        port = harness.service.smtp_port

        def send_over_tls() -> bool:
            context = ssl.create_default_context(cafile=str(cert))
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo()
                offered = client.has_extn("starttls")
                client.starttls(context=context)
                client.send_message(mail("Über TLS"))
            return offered

        assert await asyncio.to_thread(send_over_tls)
        assert await Message.filter(text__contains="Über TLS").exists()

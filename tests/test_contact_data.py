"""Contact data in e-mail signatures, and phone numbers in E.164."""

from __future__ import annotations

import pytest

from bot.phones import e164
from bot.signatures import Found, contact_data

GERMAN = """Hallo,

meine Bestellung 4711 fehlt.

Mit freundlichen Grüßen
Jonas Weber
Leiter Einkauf
Weber Maschinenbau GmbH
Industriestraße 12
70565 Stuttgart
Tel.: +49 711 1234567
Mobil: 0171 2345678
jonas.weber@weber.example

Am 1.12.2026 schrieb Support:
> Mit freundlichen Grüßen
> Tel.: +49 30 999999
"""

# The signature separator is "-- " with its trailing space.
ENGLISH = "Hi, the app crashes.\n\n-- \nTom Baker\nCTO, Example Ltd\n+44 20 7946 0958\n"


def test_a_german_signature_gives_position_company_address_and_phones() -> None:
    assert contact_data(GERMAN) == [
        Found("position", "Leiter Einkauf"),
        Found("company", "Weber Maschinenbau GmbH"),
        Found("address", "Industriestraße 12, 70565 Stuttgart"),
        Found("phone", "+497111234567"),
        Found("phone", "0171 2345678"),
    ]


def test_a_dash_dash_signature_and_a_bare_number() -> None:
    assert contact_data(ENGLISH) == [
        Found("company", "CTO, Example Ltd"),
        Found("phone", "+442079460958"),
    ]


def test_no_signature_no_suggestions() -> None:
    assert contact_data("Bitte rufen Sie mich an: 0171 2345678") == []


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+49 151 12345678", "+4915112345678"),
        ("0049 (151) 123-456-78", "+4915112345678"),
        ("4915112345678", "+4915112345678"),
        ("0151 12345678", None),
        ("+12", None),
        ("call me", None),
    ],
)
def test_phone_numbers_in_e164(number: str, expected: str | None) -> None:
    assert e164(number) == expected

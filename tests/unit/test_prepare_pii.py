"""PII and secrets: each detector finds its kind, checksums are honoured, nothing calls out."""

from __future__ import annotations

import socket

import pytest

from forge_ray.config.prepare import DenyListConfig, PatternConfig, PiiConfig
from forge_ray.corpora.tickets import card_number, iban, secret
from forge_ray.prepare.pii import PiiScanner


@pytest.fixture(scope="module")
def scanner():
    return PiiScanner(PiiConfig(
        patterns=[PatternConfig(name="EMPLOYEE_ID", regex=r"\bEMP-\d{5}\b")],
        deny_lists=[DenyListConfig(name="CLIENT", terms=["Globex Corporation", "Initech"])],
    ))


@pytest.mark.parametrize("text, placeholder", [
    ("Write to jane.doe@example.com today.", "<EMAIL>"),
    ("Call me on +44 20 7946 0958 please.", "<PHONE>"),
    ("Call me on +1 212 555 0187 please.", "<PHONE>"),
    ("Server at 203.0.113.7 is down.", "<IP_ADDRESS>"),
    ("Server at 2001:db8:85a3::8a2e:370:7334 is down.", "<IP_ADDRESS>"),
    ("key AKIAIOSFODNN7EXAMPLE in the config", "<SECRET>"),
    ("token ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8" + " leaked", "<SECRET>"),
    ("high entropy Zx9qL2mVb7Rt4Wp8Ks3Nd6Hf1Jc5 token", "<SECRET>"),
    ("Badge EMP-04217 was used.", "<EMPLOYEE_ID>"),
    ("The contract with initech was renewed.", "<CLIENT>"),
])
def test_each_kind_is_redacted_with_its_placeholder(scanner, text, placeholder):
    redacted, counts = scanner.redact(text)
    assert placeholder in redacted and sum(counts.values()) == 1, (redacted, counts)


def test_iban_and_card_need_valid_checksums(scanner):
    import random

    r = random.Random(3)
    good_iban, good_card = iban(r), card_number(r)
    assert "<IBAN>" in scanner.redact(f"Pay to {good_iban} now.")[0]
    assert "<CREDIT_CARD>" in scanner.redact(f"Card {good_card} was charged.")[0]
    bad_iban = good_iban[:-1] + str((int(good_iban[-1]) + 1) % 10)  # breaks mod-97
    bad_card = good_card[:-1] + str((int(good_card[-1]) + 1) % 10)  # breaks Luhn
    assert "<IBAN>" not in scanner.redact(f"Pay to {bad_iban} now.")[0]
    assert "<CREDIT_CARD>" not in scanner.redact(f"Card {bad_card} was charged.")[0]


def test_whole_private_key_block_is_one_secret(scanner):
    import random

    r = random.Random(0)
    kind, value = "", ""
    while kind != "PRIVATE_KEY":
        kind, value = secret(r)
    redacted, counts = scanner.redact(f"see:\n{value}\nthanks")
    assert redacted == "see:\n<SECRET>\nthanks" and counts == {"SECRET": 1}


def test_plain_prose_and_code_are_left_alone(scanner):
    text = "def parse_config(path):\n    return yaml.safe_load(open(path))  # version 3.11.2\n"
    assert scanner.redact(text) == (text, {})


def test_scanning_makes_no_outbound_connection(monkeypatch, tmp_path):
    """Fails on any attempt to open a connection while the scanner is built and used."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("outbound connections are not allowed in this test")

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise OSError("name lookups are not allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)  # every outbound call starts with one
    fresh = PiiScanner(PiiConfig())
    redacted, _ = fresh.redact("mail bob@kestrel-instruments.co.uk or visit 198.51.100.4, +49 30 1234567")
    assert redacted.count("<") == 3 and attempts == []
    # The guard itself works: tldextract's default extractor does try to fetch the suffix list.
    import tldextract

    tldextract.TLDExtract(cache_dir=str(tmp_path))("bob@example.co.uk")
    assert attempts, "the guard saw no connection attempt from the default tldextract"


EDGE_CASES = [
    "(10.0.0.1), ip=192.168.1.20, [2001:db8::1]:8080 and fe80::1%eth0 or ::ffff:192.0.2.1 or ::",
    "a[::2] b[1:2:3] 1.2.3.4.5 v1.2.3 999.1.1.1 0.0.0.0/8 ::1 2001:db8:0:0:0:0:2:1",
    "mail\u00a0jane.doe@example.com\u3000or\tj\u00f6hn@ex\u00e4mple.org,(bob@kestrel.co.uk). x@y @@ a@b",
    "card 4111-1111-1111-1111 or 4111 1111 1111 1111x or 41111111111111111 or 5500 0000 0000 0004",
    "iban DE89 3704 0044 0532 0130 00, GB82WEST12345698765432, de89370400440532013000, XDE89370400440532013000",
    "IBAN:DE89-3704-0044-0532-0130-00; DE89 3704 0044 0532 0130 00X (GB82 WEST 1234 5698 7654 32)",
    "card:4111111111111111; x4111 1111 1111 1111 4111-1111-1111-1111-1 1 4111111111111 \U000116d4\U000116d1"
    "\U000116d1\U000116d1 \U000116d1\U000116d1\U000116d1\U000116d1 1111 1111 and 4111\u00a01111\u00a01111\u00a01111",
    "",
]


def test_hints_leave_out_only_text_that_cannot_match():
    """The presidio recognisers run only on texts or tokens with a hint (a necessary condition of
    their patterns); the spans are exactly those of every recogniser on every whole text, over
    generated tickets (every kind of personal value planted) and edge cases."""
    from forge_ray.corpora.tickets import ticket_records

    cfg = PiiConfig()
    fast, slow = PiiScanner(cfg), PiiScanner(cfg)
    assert all(hint is not None for _, hint, *_ in fast._presidio), "presidio's patterns changed: re-derive HINTS"
    slow._presidio = [(rec, None, None, 0) for rec, *_ in fast._presidio]
    tickets, planted = ticket_records(n=400, seed=7)
    texts = [t["text"] for t in tickets] + EDGE_CASES
    for text in texts:
        assert fast.find(text) == slow.find(text), text
    redacted = {t["id"]: fast.redact(t["text"])[0] for t in tickets}
    assert all(v["value"] not in redacted[v["id"]] for v in planted["values"])

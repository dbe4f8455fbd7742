"""Shoutrrr → apprise URL translation, Go-style templates, and the never-raise contract."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from kured import notify
from kured.config import Config
from kured.notify import (
    Details,
    Notifier,
    Templates,
    go_sprintf,
    render_template,
    translate_notify_url,
    unknown_placeholders,
    validate_notify_url,
)

SLACK = "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
DISCORD_TOKEN = "W3dE2OZz4C13_4z_uHfDOoC7BqTW288s-z1ykqI0iJnY_HjRqMGO8Sc7YDqvf_KVKjhJ"
ROCKET = "8eGdRzc9r4YYNyvge/2XYQcX9NBwJBKfQnphpebPcnXZcPEi32Nt4NKJfrnbhsbRfX"
MAIL_ARGS = "from=kured%40example.com&to=ops%40example.com"

TRANSLATIONS = [
    # Slack: legacy shoutrrr form is apprise's form too; new forms are rewritten.
    (f"slack://{SLACK}", f"slack://{SLACK}"),
    (f"slack://kured@{SLACK}?channel=%23ops", f"slack://kured@{SLACK}/%23ops"),
    (
        "slack://hook:T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook?botname=kured",
        f"slack://kured@{SLACK}",
    ),
    (
        "slack://xoxb:123456789012-1234567890123-4mt0t4l1YL3g1T5L4cK70k3N@C001CH4NN3L",
        "slack://xoxb-123456789012-1234567890123-4mt0t4l1YL3g1T5L4cK70k3N/C001CH4NN3L",
    ),
    # E-mail: shoutrrr's "Auto" encryption = implicit TLS on 465, STARTTLS elsewhere.
    (
        "smtp://user:pa%2Fss@mail.example.com:587/?fromAddress=kured@example.com"
        "&toAddresses=ops@example.com",
        f"mailtos://user:pa%2Fss@mail.example.com:587/?smtp=mail.example.com&{MAIL_ARGS}",
    ),
    (
        "smtp://mail.example.com:465/?from=kured@example.com&to=ops@example.com",
        f"mailtos://mail.example.com:465/?smtp=mail.example.com&{MAIL_ARGS}&mode=ssl",
    ),
    (
        "smtp://mail.example.com/?from=kured@example.com&to=ops@example.com&StartTLS=No",
        f"mailto://mail.example.com:25/?smtp=mail.example.com&{MAIL_ARGS}",
    ),
    (
        "smtp://mail.example.com:2525/?from=kured@example.com&to=ops@example.com"
        "&encryption=ImplicitTLS&fromname=Kured",
        f"mailtos://mail.example.com:2525/?smtp=mail.example.com&{MAIL_ARGS}&name=Kured&mode=ssl",
    ),
    (
        f"discord://{DISCORD_TOKEN}@693853386302554172",
        f"discord://693853386302554172/{DISCORD_TOKEN}",
    ),
    (
        "telegram://123456789:AAbb-Cc@telegram?chats=@kured,-100123",
        "tgram://123456789:AAbb-Cc/%40kured/-100123",
    ),
    ("gotify://gotify.example.com/path/to/AzyoeNS", "gotifys://gotify.example.com/path/to/AzyoeNS"),
    ("gotify://10.0.0.1:8080/Tok/?disabletls=yes", "gotify://10.0.0.1:8080/Tok"),
    ("ntfy://ntfy.sh/kured", "ntfys://ntfy.sh/kured"),
    ("ntfy://u:p@ntfy.example.com/kured?scheme=http", "ntfy://u:p@ntfy.example.com/kured"),
    (f"rocketchat://chat.example.com/{ROCKET}", f"rockets://{ROCKET}@chat.example.com"),
    (
        f"rocketchat://kured@chat.example.com:8443/{ROCKET}/ops",
        f"rockets://kured:{ROCKET}@chat.example.com:8443/%23ops",
    ),
    (
        f"rocketchat://chat.example.com/{ROCKET}/@alice",
        f"rockets://{ROCKET}@chat.example.com/%40alice",
    ),
    # Generic webhook: HTTPS unless disabletls / generic+http; unknown vars are forwarded.
    ("generic://example.com/api/hook", "jsons://example.com/api/hook"),
    ("generic://127.0.0.1:9000/hook?DisableTLS=yes", "json://127.0.0.1:9000/hook"),
    ("generic+http://127.0.0.1:9000/hook", "json://127.0.0.1:9000/hook"),
    ("generic+https://example.com/hook", "jsons://example.com/hook"),
    (
        "generic://example.com/hook?foo=bar&_template=x&template=json&requestmethod=put",
        "jsons://example.com/hook?method=PUT&-foo=bar&-template=x",
    ),
    # Native apprise URLs pass through untouched.
    ("json://127.0.0.1:9000/x", "json://127.0.0.1:9000/x"),
    ("workflows://prod-00.westus.logic.azure.com:443/abc/def", None),
    ("mailtos://user:pass@example.com?to=ops@example.com", None),
    ("tgram://123456789:AAbb/42", None),
    (f"slack://{SLACK}/%23ops/@alice", None),
    ("slack://xoxb-1234-5678-abcd/%23ops", None),
    (f"discord://693853386302554172/{DISCORD_TOKEN}", None),
    ("ntfy://kured-topic", None),
]


@pytest.mark.parametrize(("shoutrrr", "expected"), TRANSLATIONS)
def test_translation(shoutrrr: str, expected: str | None) -> None:
    assert translate_notify_url(shoutrrr).url == (expected or shoutrrr)


@pytest.mark.parametrize(
    ("url", "ignored"),
    [
        ("gotify://h/tok?priority=1&title=Hi", ("priority", "title")),
        ("smtp://h/?from=a@example.com&to=b@example.com&subject=S", ("subject",)),
        (f"slack://{SLACK}?color=good", ("color",)),
    ],
)
def test_unsupported_options_are_reported(url: str, ignored: tuple[str, ...]) -> None:
    assert translate_notify_url(url).ignored == ignored


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("teams://g@t/a/o/e?host=x.webhook.office.com", "workflows://"),
        ("slack://hook:A-B@webhook", "slack://hook:A-B-C@webhook"),
        ("smtp://mail.example.com/?from=a@example.com", "to=ADDR"),
        ("smtp://h/?from=a@example.com&to=b@example.com&starttls=maybe", "not a boolean"),
        ("discord://693853386302554172", "discord://TOKEN@WEBHOOK_ID"),
        ("ntfy://host/a/b", "ntfy://[USER:PASS@]HOST/TOPIC"),
        ("telegram://123:abc@telegram", "chats=ID"),
        ("gotify://host", "gotify://HOST"),
        ("rocketchat://host/onlyone", "rocketchat://HOST/TOKEN_A/TOKEN_B"),
        ("generic:///path", "generic://HOST"),
    ],
)
def test_malformed_shoutrrr_urls_raise_one_line(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="--notify-url") as caught:
        translate_notify_url(url)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValueError) as caught:
        translate_notify_url("telegram://123:SECRET@telegram")
    assert "SECRET" not in str(caught.value)


def test_validate_returns_apprise_url_and_warns_about_dropped_options(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kured.notify"):
        assert validate_notify_url("gotify://h.example.com/tok?priority=5") == (
            "gotifys://h.example.com/tok"
        )
    assert "priority" in caplog.text


def test_validate_empty_url_means_off() -> None:
    assert validate_notify_url("  ") == ""


@pytest.mark.parametrize(("url", "scheme"), [("nosuch://x", "nosuch"), ("slack://one", "slack")])
def test_validate_rejects_what_apprise_cannot_use(url: str, scheme: str) -> None:
    with pytest.raises(ValueError, match=rf"apprise cannot use this {scheme}:// URL"):
        validate_notify_url(url)


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("Draining node %s", "Draining node n1"),
        ("%v is rebooting (100%%)", "n1 is rebooting (100%)"),
        ("%s and %s", "n1 and %!s(MISSING)"),
        ("Rebooting now", "Rebooting now%!(EXTRA string=n1)"),
        ("node %d", "node %!d(string=n1)"),
    ],
)
def test_go_sprintf_matches_go(template: str, text: str) -> None:
    assert go_sprintf(template, "n1") == text


def test_templates_from_config() -> None:
    config = Config(
        node_id="n1", message_template_reboot="Reboot of %s", notify_urls=("json://h/x",)
    )
    notifier = Notifier.from_config(config)
    assert notifier.enabled
    assert Templates(reboot="Reboot of %s").render("reboot", "n1") == "Reboot of n1"
    assert Templates().render("uncordon", "n1") == "Node n1 rebooted & uncordoned successfully!"


async def test_no_url_is_a_silent_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "_send_blocking", pytest.fail)
    assert not Notifier("").enabled
    assert await Notifier("").notify("drain", "n1") is False


async def test_send_error_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(url: str, body: str) -> bool:
        raise OSError("boom")

    monkeypatch.setattr(notify, "_send_blocking", explode)
    with caplog.at_level(logging.WARNING, logger="kured.notify"):
        assert await Notifier("json://h/x").notify("reboot", "n1") is False
    assert "Error notifying: reboot notification failed: boom" in caplog.text


async def test_slow_send_times_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def hang(url: str, body: str) -> bool:
        release.wait(5)
        return True

    monkeypatch.setattr(notify, "_send_blocking", hang)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="kured.notify"):
            assert await Notifier("json://h/x", timeout=0.2).notify("drain", "n1") is False
    finally:
        release.set()
    assert time.monotonic() - started < 2
    assert "timed out after 0.2s" in caplog.text


async def test_body_is_the_rendered_template(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str]] = []

    def record(url: str, body: str) -> bool:
        sent.append((url, body))
        return True

    monkeypatch.setattr(notify, "_send_blocking", record)
    notifier = Notifier("generic://example.com/hook", Templates(drain="Drain %s!"))
    assert await notifier.notify("drain", "n7") is True
    assert sent == [("jsons://example.com/hook", "Drain n7!")]


# --- several URLs, our placeholders and messages -----------------------------------------

DETAILS = Details(reason="disk 95% full", duration="1h0m0s", packages="linux-image, libc6")


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("Draining node %s", "Draining node n1"),
        ("Draining {node}: {reason}", "Draining n1: disk 95% full"),
        ("%s blocked for {duration}", "n1 blocked for 1h0m0s"),
        ("{node} needs {packages} (100%%)", "n1 needs linux-image, libc6 (100%)"),
        ("Reboot {nod}", "Reboot {nod}%!(EXTRA string=n1)"),
        ("{reason} %s %s", "disk 95% full n1 %!s(MISSING)"),
        ("{{node}}", "{n1}"),
    ],
)
def test_placeholders_and_go_verbs(template: str, text: str) -> None:
    assert render_template(template, "n1", DETAILS) == text


def test_unknown_placeholders_are_reported() -> None:
    assert unknown_placeholders("{nod} {reason} {why} %s") == ["{nod}", "{why}"]
    assert unknown_placeholders("Draining node %s") == []


def test_our_messages_have_defaults_with_the_reason() -> None:
    templates = Templates()
    assert templates.render("blocked", "n1", DETAILS) == (
        "Reboot of node n1 blocked for 1h0m0s: disk 95% full"
    )
    assert templates.render("drain-failed", "n1", Details(reason="PDB web")) == (
        "Draining node n1 failed: PDB web"
    )
    assert templates.render("reboot-loop", "n1", Details(reason="loop")) == (
        "Node n1: loop; not rebooting it again"
    )
    assert templates.render("gate-timeout", "n1", Details(reason="gate")) == (
        "Node n1: gate; holding the reboot lock"
    )


async def test_config_templates_reach_the_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    def record(url: str, body: str) -> bool:
        sent.append(body)
        return True

    monkeypatch.setattr(notify, "_send_blocking", record)
    config = Config(
        node_id="n1", notify_urls=("json://h/x",), message_template_drain_failed="{node} stuck"
    )
    assert await Notifier.from_config(config).notify("drain-failed", "n1") is True
    assert sent == ["n1 stuck"]


async def test_every_url_gets_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str]] = []

    def record(url: str, body: str) -> bool:
        sent.append((url, body))
        return url != "json://down/x"

    monkeypatch.setattr(notify, "_send_blocking", record)
    both = Notifier(["json://a/x", "generic://b.example.com/hook"])
    assert await both.notify("drain", "n1") is True
    assert sorted(sent) == [
        ("json://a/x", "Draining node n1"),
        ("jsons://b.example.com/hook", "Draining node n1"),
    ]
    sent.clear()
    assert await Notifier(["json://a/x", "json://down/x"]).send("hi") is False
    assert sorted(sent) == [("json://a/x", "hi"), ("json://down/x", "hi")]

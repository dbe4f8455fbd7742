"""Notifications: Go kured's ``--notify-url`` (a shoutrrr URL) delivered through apprise.

Go kured users already have shoutrrr URLs in their manifests, so those keep working: the
services kured users actually configure are translated to apprise's equivalent URL, and
any URL apprise understands natively (``json://``, ``workflows://``, ``mailtos://``, a
plain ``https://`` webhook apprise recognises …) is used as is. Translation is pure and
cheap; apprise itself is imported only when a URL is validated or a message is sent,
because importing it loads ~180 plugins (about a second of start-up).

``--notify-url`` may be repeated: every message goes to every URL, each send on its own.
Message templates take Go kured's ``%s`` (the node) and our placeholders ``{node}``,
``{reason}``, ``{duration}`` and ``{packages}`` (:func:`render_template`).

A notification must never hold up or break a reboot: sends run in a worker thread with
a timeout, and any failure is a logged warning.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from kured.config import Config

log = logging.getLogger(__name__)

Event = Literal[
    "drain", "reboot", "uncordon", "blocked", "drain-failed", "reboot-loop", "gate-timeout"
]
PLACEHOLDERS = ("node", "reason", "duration", "packages")

TEAMS_RETIRED = (
    "teams:// uses Microsoft's Office 365 connector webhooks, which Microsoft retired; "
    "create a Teams workflow ('When a Teams webhook request is received') and pass its "
    "https://…logic.azure.com/workflows/… URL, or apprise's workflows://HOST/WORKFLOW/SIGNATURE "
    "form, as --notify-url"
)


class Translated(NamedTuple):
    """An apprise URL plus the shoutrrr options it could not carry over."""

    url: str
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Authority:
    """The parts of ``user:password@host:port`` with their case kept.

    ``urlsplit().hostname`` lower-cases the host, but shoutrrr puts case-sensitive tokens
    there (Slack's ``T0123ABCD``, Discord's webhook id), so the authority is split by hand.
    """

    user: str
    password: str
    host: str  # including ":port" if given

    @classmethod
    def parse(cls, netloc: str) -> _Authority:
        userinfo, _, host = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        return cls(unquote(user), unquote(password), host)

    @property
    def userinfo(self) -> str:
        """``user:password@`` re-quoted for an apprise URL, or ``""``."""
        if not self.user and not self.password:
            return ""
        pw = f":{_q(self.password)}" if self.password else ""
        return f"{_q(self.user)}{pw}@"


def _q(value: str) -> str:
    return quote(value, safe="")


def _path_parts(path: str) -> list[str]:
    return [unquote(p) for p in path.split("/") if p]


def _shoutrrr_bool(value: str, key: str) -> bool:
    """Shoutrrr's boolean props accept yes/no, true/false, 1/0 (any case)."""
    lowered = value.strip().lower()
    if lowered in {"yes", "y", "true", "1"}:
        return True
    if lowered in {"no", "n", "false", "0"}:
        return False
    raise ValueError(f"--notify-url option {key}={value!r} is not a boolean (use yes or no)")


class _Query:
    """Shoutrrr query props: keys are case-insensitive; unused ones are reported."""

    def __init__(self, raw: str) -> None:
        self._items = {k.lower(): v for k, v in parse_qsl(raw, keep_blank_values=True)}

    def pop(self, *keys: str) -> str:
        """The first non-empty value among ``keys`` (aliases), consuming all of them."""
        values = [self._items.pop(k, "") for k in keys]
        return next((v for v in values if v), "")

    def flag(self, key: str, default: bool) -> bool:
        value = self.pop(key)
        return _shoutrrr_bool(value, key) if value else default

    def rest(self) -> dict[str, str]:
        rest, self._items = self._items, {}
        return rest


def _need(condition: object, scheme: str, expected: str) -> None:
    if not condition:
        raise ValueError(f"--notify-url: malformed {scheme}:// URL; expected {expected}")


def _slack(a: _Authority, path: list[str], q: _Query) -> str | None:
    """``slack://[bot@]A/B/C`` (legacy), ``slack://hook:A-B-C@webhook``, ``slack://xoxb:T@CHAN``.

    Other shapes (``slack://A/B/C/#chan``, ``slack://xoxb-…/#chan``) are apprise's own.
    """
    botname = q.pop("botname", "username")
    channel = q.pop("channel")
    kind = a.user.lower()
    if a.password and kind == "hook":
        token = re.split(r"[-/,]", a.password)
        _need(len(token) == 3 and not path, "slack", "slack://hook:A-B-C@webhook")
    elif a.password and kind.startswith("xox"):
        _need(not path, "slack", "slack://xoxb:TOKEN@CHANNEL")
        token, channel = [f"{kind}-{a.password}"], a.host
    elif len(path) == 2 and not a.password:
        token, botname = [a.host, *path], a.user or botname
    else:
        return None
    target = f"/{_q(channel)}" if channel else ""
    bot = f"{_q(botname)}@" if botname else ""
    return f"slack://{bot}{'/'.join(_q(t) for t in token)}{target}"


def _smtp(a: _Authority, path: list[str], q: _Query) -> str:
    """``smtp://user:pass@host:port/?from=…&to=…`` with shoutrrr's TLS rules.

    Shoutrrr's default encryption "Auto" means implicit TLS on port 465 and STARTTLS
    (``starttls=yes``, the default) elsewhere; apprise's ``mode=ssl`` / ``starttls`` /
    plain ``mailto://`` say the same.
    """
    sender = q.pop("fromaddress", "from")
    recipients = q.pop("toaddresses", "to")
    _need(sender and recipients, "smtp", "smtp://user:pass@host:port/?from=ADDR&to=ADDR[,ADDR]")
    host, _, port = a.host.partition(":")
    port = port or "25"
    encryption = q.pop("encryption").lower() or "auto"
    implicit = encryption == "implicittls" or (encryption == "auto" and port == "465")
    starttls = q.flag("starttls", default=True)
    args = {"smtp": host, "from": sender, "to": recipients}
    if name := q.pop("fromname"):
        args["name"] = name
    if implicit:
        args["mode"] = "ssl"
    scheme = "mailtos" if implicit or starttls else "mailto"
    return f"{scheme}://{a.userinfo}{host}:{port}/?{urlencode(args)}"


def _discord(a: _Authority, path: list[str], q: _Query) -> str | None:
    """``discord://TOKEN@WEBHOOK_ID`` → apprise's ``discord://WEBHOOK_ID/TOKEN``."""
    if path:
        return None  # already apprise's form
    _need(a.user and a.host, "discord", "discord://TOKEN@WEBHOOK_ID")
    username = q.pop("username")
    bot = f"{_q(username)}@" if username else ""
    return f"discord://{bot}{a.host}/{_q(a.user)}"


def _telegram(a: _Authority, path: list[str], q: _Query) -> str:
    """``telegram://BOT:TOKEN@telegram?chats=a,b`` → ``tgram://BOT:TOKEN/a/b``."""
    chats = [c for c in q.pop("chats", "channels").split(",") if c]
    _need(a.user and a.password and chats, "telegram", "telegram://TOKEN@telegram?chats=ID[,ID]")
    return f"tgram://{_q(a.user)}:{_q(a.password)}/" + "/".join(_q(c) for c in chats)


def _gotify(a: _Authority, path: list[str], q: _Query) -> str:
    """``gotify://host[:port][/sub/path]/TOKEN``; shoutrrr speaks HTTPS unless disabletls."""
    _need(a.host and path, "gotify", "gotify://HOST[:PORT][/PATH]/TOKEN")
    scheme = "gotify" if q.flag("disabletls", default=False) else "gotifys"
    return f"{scheme}://{a.host}/" + "/".join(_q(p) for p in path)


def _ntfy(a: _Authority, path: list[str], q: _Query) -> str | None:
    """``ntfy://[user:pass@]host/TOPIC``; HTTPS unless ``scheme=http``.

    Without a path it is apprise's ``ntfy://TOPIC`` (a topic on ntfy.sh).
    """
    if not path:
        return None
    _need(len(path) == 1, "ntfy", "ntfy://[USER:PASS@]HOST/TOPIC")
    scheme = "ntfy" if q.pop("scheme").lower() == "http" else "ntfys"
    return f"{scheme}://{a.userinfo}{a.host or 'ntfy.sh'}/{_q(path[0])}"


def _rocketchat(a: _Authority, path: list[str], q: _Query) -> str:
    """``rocketchat://[user@]host[:port]/TOKEN_A/TOKEN_B[/channel|@user]`` (always HTTPS)."""
    _need(a.host and len(path) in (2, 3), "rocketchat", "rocketchat://HOST/TOKEN_A/TOKEN_B")
    user = f"{_q(a.user)}:" if a.user else ""
    target = ""
    if len(path) == 3:
        channel = path[2] if path[2].startswith(("@", "#")) else f"#{path[2]}"
        target = f"/{_q(channel)}"
    return f"rockets://{user}{path[0]}/{path[1]}@{a.host}{target}"


# Shoutrrr generic-service props that are not forwarded to the target as query variables.
_GENERIC_RESERVED = ("contenttype", "template", "title", "messagekey", "titlekey")


def _generic(a: _Authority, path: list[str], q: _Query, tls: bool = True) -> str:
    """``generic://host/path`` (HTTPS unless ``disabletls=yes``) → apprise ``jsons://``.

    Shoutrrr forwards unknown query variables to the target (``_name`` escapes a reserved
    one); apprise does the same for ``-name``. The JSON body is apprise's
    (``{"version", "title", "message", "type"}``), not shoutrrr's.
    """
    _need(a.host, "generic", "generic://HOST[:PORT]/PATH")
    tls = tls and not q.flag("disabletls", default=False)
    args = {"method": q.pop("requestmethod").upper()}
    for key in _GENERIC_RESERVED:
        q.pop(key)
    args |= {f"-{k.removeprefix('_')}": v for k, v in q.rest().items()}
    query = urlencode({k: v for k, v in args.items() if v})
    scheme = "jsons" if tls else "json"
    location = "/".join(_q(p) for p in path)
    return f"{scheme}://{a.userinfo}{a.host}/{location}" + (f"?{query}" if query else "")


def _teams(a: _Authority, path: list[str], q: _Query) -> str:
    raise ValueError(f"--notify-url: {TEAMS_RETIRED}")


# A translator returns None when the URL is already in apprise's form for that scheme.
_Translator = Callable[[_Authority, list[str], _Query], str | None]

_SHOUTRRR: dict[str, _Translator] = {
    "slack": _slack,
    "smtp": _smtp,
    "discord": _discord,
    "telegram": _telegram,
    "gotify": _gotify,
    "ntfy": _ntfy,
    "rocketchat": _rocketchat,
    "generic": _generic,
    "generic+https": _generic,
    "generic+http": lambda a, path, q: _generic(a, path, q, tls=False),
    "teams": _teams,
}
SHOUTRRR_SCHEMES = frozenset(_SHOUTRRR)


def translate_notify_url(url: str) -> Translated:
    """Turn a shoutrrr URL into apprise's form; apprise URLs are returned unchanged.

    Where both use a scheme, the URL's shape decides; ``gotify://`` and ``ntfy://HOST/TOPIC``
    are read as shoutrrr's (HTTPS), since ``--notify-url`` is documented as shoutrrr's.

    Raises ValueError with a one-line, actionable message for malformed shoutrrr URLs
    and for ``teams://``. Pure: no apprise import, no network.
    """
    url = url.strip()
    parts = urlsplit(url)
    translator = _SHOUTRRR.get(parts.scheme.lower())
    if translator is None:
        return Translated(url)
    query = _Query(parts.query)
    apprise_url = translator(_Authority.parse(parts.netloc), _path_parts(parts.path), query)
    if apprise_url is None:
        return Translated(url)
    return Translated(apprise_url, tuple(sorted(query.rest())))


def _apprise_accepts(url: str) -> bool:
    import apprise  # noqa: PLC0415 - heavy (loads every plugin); only when needed

    return bool(apprise.Apprise().add(url))


def validate_notify_url(url: str) -> str:
    """Check ``--notify-url`` at start-up and return the apprise URL to send to.

    Raises ValueError with a one-line message naming the problem and the fix. Shoutrrr
    options that apprise cannot express are logged as a warning, not refused. An empty
    URL (notifications off) is returned as is.
    """
    if not url.strip():
        return ""
    translated = translate_notify_url(url)
    scheme = urlsplit(translated.url).scheme or "?"
    if not _apprise_accepts(translated.url):
        raise ValueError(
            f"--notify-url: apprise cannot use this {scheme}:// URL; give a shoutrrr URL "
            "(slack, smtp, discord, telegram, gotify, ntfy, rocketchat, generic) or an apprise "
            "URL (https://appriseit.com/services/)"
        )
    if translated.ignored:
        log.warning(
            "--notify-url: ignoring shoutrrr options apprise has no equivalent for: %s",
            ", ".join(translated.ignored),
        )
    return translated.url


_VERB = re.compile(r"%(.)", re.DOTALL)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def go_sprintf(template: str, node: str, *, extra: bool = True) -> str:
    """Format a message template the way Go's ``fmt.Sprintf(template, node)`` does.

    Kured users' templates were written for Go: ``%s``/``%v`` is the node name, ``%%`` a
    percent sign; a second verb prints ``%!s(MISSING)`` and a template without one gets
    ``%!(EXTRA string=<node>)`` appended, exactly as Go kured would send them (unless
    ``extra`` is False: the template names the node another way).
    """
    used = False

    def verb(match: re.Match[str]) -> str:
        nonlocal used
        letter = match.group(1)
        if letter == "%":
            return "%"
        if used:
            return f"%!{letter}(MISSING)"
        used = True
        return node if letter in "sv" else f"%!{letter}(string={node})"

    text = _VERB.sub(verb, template)
    return text if used or not extra else f"{text}%!(EXTRA string={node})"


@dataclass(frozen=True)
class Details:
    """What a message may say beyond the node: the values of its placeholders."""

    reason: str = ""  # why (the reboot's cause, the blocker, the drain error …)
    duration: str = ""  # how long the state lasted, Go form (``1h5m0s``)
    packages: str = ""  # the packages that asked for the reboot, comma-separated


def render_template(template: str, node: str, details: Details = Details()) -> str:
    """Go's ``%s`` first, then ``{node}``, ``{reason}``, ``{duration}``, ``{packages}``.

    A template without our placeholders comes out exactly as Go kured sends it. Other
    ``{words}`` are left as written (see :func:`unknown_placeholders`).
    """
    values = {"node": node, **asdict(details)}
    ours = any(m.group(1) in values for m in _PLACEHOLDER.finditer(template))
    text = go_sprintf(template, node, extra=not ours)
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def unknown_placeholders(template: str) -> list[str]:
    """``{words}`` in a template that are not placeholders (probably typos)."""
    return [m.group(0) for m in _PLACEHOLDER.finditer(template) if m.group(1) not in PLACEHOLDERS]


@dataclass(frozen=True)
class Templates:
    """The message templates (``--message-template-*``), Go kured's three and ours."""

    # The defaults are the flags' (the Config fields' class attributes hold them).
    drain: str = Config.message_template_drain
    reboot: str = Config.message_template_reboot
    uncordon: str = Config.message_template_uncordon
    blocked: str = Config.message_template_blocked
    drain_failed: str = Config.message_template_drain_failed
    reboot_loop: str = Config.message_template_reboot_loop
    gate_timeout: str = Config.message_template_gate_timeout

    def render(self, event: Event, node: str, details: Details = Details()) -> str:
        template: str = getattr(self, event.replace("-", "_"))
        return render_template(template, node, details)


def _send_blocking(url: str, body: str) -> bool:
    import apprise  # noqa: PLC0415 - heavy (loads every plugin); only when needed

    notifier = apprise.Apprise()
    return bool(notifier.add(url)) and bool(notifier.notify(body=body))


class Notifier:
    """Sends kured's messages to every URL; a no-op without one."""

    def __init__(
        self,
        urls: str | Sequence[str],
        templates: Templates | None = None,
        timeout: float = 30.0,
    ):
        listed = [urls] if isinstance(urls, str) else urls
        self._urls = tuple(translate_notify_url(url).url for url in listed if url)
        self._templates = templates or Templates()
        self._timeout = timeout

    @classmethod
    def from_config(cls, config: Config, timeout: float = 30.0) -> Notifier:
        templates = Templates(
            drain=config.message_template_drain,
            reboot=config.message_template_reboot,
            uncordon=config.message_template_uncordon,
            blocked=config.message_template_blocked,
            drain_failed=config.message_template_drain_failed,
            reboot_loop=config.message_template_reboot_loop,
            gate_timeout=config.message_template_gate_timeout,
        )
        return cls(config.notify_urls, templates, timeout)

    @property
    def enabled(self) -> bool:
        return bool(self._urls)

    async def notify(self, event: Event, node: str, details: Details = Details()) -> bool:
        """Send the templated message for ``event``; True if delivered. Never raises."""
        return await self.send(self._templates.render(event, node, details), event)

    async def send(self, body: str, what: str = "message") -> bool:
        """Send ``body`` as is to every URL at once; True if all got it. Never raises."""
        sent = await asyncio.gather(*(self._send_one(url, body, what) for url in self._urls))
        return bool(sent) and all(sent)

    async def _send_one(self, url: str, body: str, what: str) -> bool:
        """One URL. A timed-out send is abandoned, not killed: its thread finishes on its
        own when apprise's socket timeouts fire."""
        try:
            async with asyncio.timeout(self._timeout):  # not wait_for: see kured.agent.woken
                sent = await asyncio.to_thread(_send_blocking, url, body)
        except TimeoutError:
            log.warning("Error notifying: %s notification timed out after %gs", what, self._timeout)
            return False
        except Exception as err:
            log.warning("Error notifying: %s notification failed: %s", what, err)
            return False
        if not sent:
            log.warning("Error notifying: %s notification was not delivered", what)
        return sent

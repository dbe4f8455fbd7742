"""Log lines in Go kured's logrus text form, or JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import time_machine

from kured.logs import setup_logging

FROZEN = datetime(2019, 12, 23, 12, 39, 25, tzinfo=UTC)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root, kured = logging.getLogger(), logging.getLogger("kured")
    saved = (list(root.handlers), root.level, kured.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    kured.setLevel(saved[2])


def emit(fmt: str, level: int, msg: str, *args: object, **kwargs: object) -> str:
    stream = io.StringIO()
    setup_logging(fmt, stream)  # type: ignore[arg-type]
    with time_machine.travel(FROZEN, tick=False):
        logging.getLogger("kured.test").log(level, msg, *args, **kwargs)  # type: ignore[arg-type]
    return stream.getvalue()


def test_text_line_matches_go_kured_exactly() -> None:
    line = emit("text", logging.INFO, "Reboot not required")
    assert line == 'time="2019-12-23T12:39:25Z" level=info msg="Reboot not required"\n'


def test_text_fields_follow_in_key_order_and_quote_like_logrus() -> None:
    line = emit(
        "text",
        logging.INFO,
        "node/%s uncordoned",
        "n1",
        extra={"std": "out", "cmd": "/usr/bin/kubectl", "note": 'say "hi"\n', "empty": ""},
    )
    assert line == (
        'time="2019-12-23T12:39:25Z" level=info msg="node/n1 uncordoned" '
        'cmd=/usr/bin/kubectl empty= note="say \\"hi\\"\\n" std=out\n'
    )


def test_text_leaves_safe_words_bare() -> None:
    assert " msg=Holding\n" in emit("text", logging.INFO, "Holding")


@pytest.mark.parametrize(
    ("level", "name"),
    [(logging.WARNING, "warning"), (logging.ERROR, "error"), (logging.CRITICAL, "fatal")],
)
def test_levels_use_logrus_names(level: int, name: str) -> None:
    assert f" level={name} " in emit("text", level, "x y")


def test_exception_is_a_field_not_a_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = emit("text", logging.ERROR, "Draining failed", exc_info=True)
    assert line.count("\n") == 1
    assert line.endswith(' error="ValueError: boom"\n')


def test_json_has_time_level_msg_and_fields() -> None:
    line = emit("json", logging.WARNING, "Lock already held: %s", "n2", extra={"node": "nœud"})
    assert line.count("\n") == 1
    assert json.loads(line) == {
        "time": "2019-12-23T12:39:25Z",
        "level": "warning",
        "msg": "Lock already held: n2",
        "node": "nœud",
    }


def test_json_renders_exceptions_and_odd_values() -> None:
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        line = emit("json", logging.ERROR, "x", exc_info=True, extra={"when": FROZEN})
    record = json.loads(line)
    assert record["error"] == "RuntimeError: bad"
    assert record["when"].startswith("2019-12-23T12:39:25")


def test_setup_replaces_itself_and_quiets_library_info() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("text", first)
    setup_logging("text", second)
    logging.getLogger("kured.agent").info("ours")
    logging.getLogger("httpx").info("chatter")
    logging.getLogger("httpx").warning("library trouble")
    assert first.getvalue() == ""
    assert "msg=ours" in second.getvalue()
    assert "chatter" not in second.getvalue()
    assert 'msg="library trouble"' in second.getvalue()

"""Kubernetes label-selector syntax, checked the way the API server parses it.

No maintained Python library parses selectors (lightkube only builds them), so this
follows the grammar of k8s.io/apimachinery/pkg/labels (``labels.Parse``)::

    selector    ::= "" | requirement ("," requirement)*
    requirement ::= "!" KEY | KEY [ ("=" | "==" | "!=" | ">" | "<") [VALUE]
                               | ("in" | "notin") "(" [VALUE] ("," [VALUE])* ")" ]

KEY is a qualified name, VALUE a label value; ``>``/``<`` need a whole number. Only
the syntax is checked here: kured still sends the selector text as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kured.k8snames import is_label_value, is_qualified_name

FORM = (
    'use a label selector like "app=web", "tier!=db", "env in (a,b)", "env notin (c)", '
    '"key" or "!key", joined by commas'
)
_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)|(?P<symbol>!=|==|[=!(),<>])|(?P<word>[^ \t\r\n=!(),<>]+)"
)
_SYMBOL_CHARACTERS = frozenset("=!(),<>")
_MAX_INT64 = 2**63 - 1
_EXACT = frozenset({"=", "==", "!=", ">", "<"})
_SETS = frozenset({"in", "notin"})
_END = ""


class SelectorError(ValueError):
    """Why a selector is not one; its text says what was found and what was expected."""


@dataclass
class _Tokens:
    """The selector's tokens and a cursor; the empty string marks the end."""

    items: list[str]
    position: int = 0

    @classmethod
    def scan(cls, text: str) -> _Tokens:
        items = []
        for match in _TOKEN.finditer(text):  # every character is in one of its groups
            if match.lastgroup != "space":
                items.append(match.group())
        return cls(items)

    def peek(self) -> str:
        return self.items[self.position] if self.position < len(self.items) else _END

    def take(self) -> str:
        token = self.peek()
        self.position += 1
        return token


def _shown(token: str) -> str:
    return f"'{token}'" if token else "end of string"


def _is_word(token: str) -> bool:
    """A key or value, not a symbol and not the end (symbols never mix with word characters)."""
    return bool(token) and token[0] not in _SYMBOL_CHARACTERS


def check_label_selector(text: str) -> str:
    """Return ``text`` if the API server would parse it as a label selector.

    Raises :class:`SelectorError` naming the first problem.
    """
    tokens = _Tokens.scan(text)
    while tokens.peek() != _END:
        _requirement(tokens)
        after = tokens.take()
        if after == ",":
            if not (_is_word(tokens.peek()) or tokens.peek() == "!"):
                raise SelectorError(f"found {_shown(tokens.peek())}, expected a key after ','")
        elif after != _END:
            raise SelectorError(f"found {_shown(after)}, expected ',' or end of string")
    return text


def _requirement(tokens: _Tokens) -> None:
    negated = tokens.peek() == "!"
    if negated:
        tokens.take()
    key = tokens.take()
    if not _is_word(key):
        raise SelectorError(f"found {_shown(key)}, expected a key")
    if not is_qualified_name(key):
        raise SelectorError(f'"{key}" is not a label key')
    if negated or tokens.peek() in (",", _END):
        return
    operator = tokens.take()
    if operator in _SETS:
        _values(tokens)
    elif operator in _EXACT:
        _exact_value(tokens, operator)
    else:
        raise SelectorError(
            f"found {_shown(operator)}, expected an operator: =, ==, !=, >, <, in or notin"
        )


def _exact_value(tokens: _Tokens, operator: str) -> None:
    value = "" if tokens.peek() in (",", _END) else tokens.take()
    if value and not _is_word(value):
        raise SelectorError(f"found {_shown(value)}, expected a value")
    _check_value(value)
    if operator in ("<", ">") and not (value.isdigit() and int(value) <= _MAX_INT64):
        raise SelectorError(f"'{operator}' needs a whole number, found {_shown(value)}")


def _values(tokens: _Tokens) -> None:
    if (opening := tokens.take()) != "(":
        raise SelectorError(f"found {_shown(opening)}, expected '('")
    expect_value = True
    while (token := tokens.take()) != ")":
        if token == ",":
            expect_value = True
        elif expect_value and _is_word(token):
            _check_value(token)
            expect_value = False
        else:
            raise SelectorError(f"found {_shown(token)}, expected a value, ',' or ')'")


def _check_value(value: str) -> None:
    if not is_label_value(value):
        raise SelectorError(f'"{value}" is not a label value')

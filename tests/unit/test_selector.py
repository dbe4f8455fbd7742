"""Label-selector syntax: the cases of k8s.io/apimachinery's selector tests, and properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kured.selector import SelectorError, check_label_selector

# From TestSelectorParse / TestLexer in k8s.io/apimachinery/pkg/labels: what labels.Parse takes.
GOOD = [
    "",
    "   ",
    "x=a,y=b,z=c",
    "x!=a,y=b",
    "x=",
    "x= ",
    "x=,z= ",
    "x= ,z= ",
    "!x",
    "x>1",
    "x>1,z<5",
    "x in (a)",
    "x in (a,b)",
    "x notin (a, b , c)",
    "x in ()",
    "x in (,)",
    "x in (a,,b)",
    "x==a",
    "in in (in)",
    "a=in",
    "example.com/key=v,!other.io/k",
    "k in(x)",
    "x>01",
]
BAD = [
    ("x=a||y=b", '"a||y" is not a label value'),
    ("x==a==b", "found '=='"),
    ("!x=a", "found '='"),
    ("x<a", "'<' needs a whole number"),
    ("x>-1", '"-1" is not a label value'),
    ("x>1.5", "'>' needs a whole number"),
    ("x>99999999999999999999", "'>' needs a whole number"),
    ("a=b=c", "found '=', expected ',' or end of string"),
    ("a,", "found end of string, expected a key after ','"),
    (",a", "found ',', expected a key"),
    ("a b", "found 'b', expected an operator"),
    ("x in (", "found end of string, expected a value"),
    ("x in a", "found 'a', expected '('"),
    ("x notin (a b)", "found 'b', expected a value"),
    ("x in (a))", "found ')', expected ',' or end of string"),
    ("Bad Key=x", "found 'Key'"),
    ("bad_prefix/k=v", '"bad_prefix/k" is not a label key'),
    ("a/b/c", '"a/b/c" is not a label key'),
    ("k=" + "v" * 64, "is not a label value"),
    ("k=-v", '"-v" is not a label value'),
    ("k=a\x00b", "is not a label value"),
    ("!", "found end of string, expected a key"),
    ("=a", "found '=', expected a key"),
]


@pytest.mark.parametrize("text", GOOD)
def test_what_the_api_server_parses_is_accepted(text: str) -> None:
    assert check_label_selector(text) == text


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_what_the_api_server_refuses_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(SelectorError, match=re.escape(reason)):
        check_label_selector(text)


_ALNUM = "abzAZ09"
_NAME = st.builds(
    lambda first, middle, last: first + (middle + last if last else ""),
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "-_.", max_size=8),
    st.sampled_from(["", *_ALNUM]),
)
_VALUE = st.one_of(st.just(""), _NAME)
_DNS_LABEL = st.builds(
    lambda first, middle: first + middle, st.sampled_from("az09"), st.text("az09", max_size=6)
)
_PREFIX = st.lists(_DNS_LABEL, min_size=1, max_size=3).map(".".join)
_KEY = st.one_of(_NAME, st.builds(lambda p, n: f"{p}/{n}", _PREFIX, _NAME))
_SPACE = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def _requirement(draw: st.DrawFn) -> str:
    key, gap = draw(_KEY), draw(_SPACE)
    form = draw(st.sampled_from(["exists", "not", "exact", "number", "set"]))
    if form == "exists":
        return key
    if form == "not":
        return f"!{gap}{key}"
    if form == "exact":
        return f"{key}{gap}{draw(st.sampled_from(['=', '==', '!=']))}{gap}{draw(_VALUE)}"
    if form == "number":
        number = draw(st.integers(0, 2**63 - 1))
        return f"{key}{gap}{draw(st.sampled_from(['<', '>']))}{gap}{number}"
    values = draw(st.lists(_VALUE, min_size=1, max_size=4))
    return f"{key} {draw(st.sampled_from(['in', 'notin']))}{gap}({gap}{', '.join(values)})"


@given(st.lists(_requirement(), max_size=5))
def test_every_selector_the_grammar_makes_is_accepted(requirements: list[str]) -> None:
    text = ",".join(requirements)
    assert check_label_selector(text) == text


@given(st.text(alphabet=st.sampled_from("ab/.-_=!(),<> \t1é\x00in"), max_size=30))
def test_any_text_is_accepted_or_refused_with_a_one_line_reason(text: str) -> None:
    try:
        assert check_label_selector(text) == text
    except SelectorError as error:
        assert str(error) and "\n" not in str(error).replace(text, "")

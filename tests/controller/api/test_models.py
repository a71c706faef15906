"""The API's request models agree with the OpenAPI document on what a blank reason is.

pydantic checks ``pattern`` with Rust's regex, the document's readers (schemathesis, client
generators) with ECMAScript's, and :mod:`controller.controls` strips with Python: a reason
valid under one must be valid under all (schemathesis found U+0085, white space to Rust and
Python but not to ECMAScript).
"""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.api.models import NOT_BLANK, PauseIn

SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()] + ["\ufeff"]


@pytest.mark.parametrize("space", SPACES)
def test_a_reason_of_white_space_alone_is_refused(space: str) -> None:
    with pytest.raises(ValidationError, match="reason"):
        PauseIn.model_validate({"reason": space * 3})


@given(st.text(min_size=1, max_size=20))
def test_pydantic_python_and_the_pattern_agree(reason: str) -> None:
    """Valid for pydantic exactly when the pattern finds a character Python keeps on strip."""
    try:
        PauseIn.model_validate({"reason": reason})
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (re.search(NOT_BLANK, reason) is not None)
    if accepted:
        assert reason.strip()  # controller.controls keeps it: never a refusal after the schema


def test_a_reason_with_a_word_is_accepted() -> None:
    assert PauseIn.model_validate({"reason": "\x85 storm \ufeff"}).reason == "\x85 storm \ufeff"

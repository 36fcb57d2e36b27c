"""The journal's step names: the strings on disk that a resume reads back."""
from __future__ import annotations

import pytest

from journal import Step, parse_step, step_name

DUP = "don:identity:dvrv-us-1:devo/0:revu/7"
TKT = "don:core:dvrv-us-1:devo/0:ticket/12"

# The exact strings earlier versions wrote: existing savepoints resume by them.
GOLDEN = [
    (("external_ref",), "external_ref"),
    (("merge", DUP), f"{DUP}|merge"),
    (("retired", DUP), f"{DUP}|retired"),
    (("swept", DUP), f"{DUP}|swept"),
    (("backup", DUP, 1), f"{DUP}|backup|1"),
    (("verify", DUP, 12), f"{DUP}|verify|12"),
    (("ticket", DUP, 2, TKT), f"{DUP}|ticket|2|{TKT}"),
    (("conversation", DUP, 1, "don:core:c/3"), f"{DUP}|conversation|1|don:core:c/3"),
    # restore_contacts.py
    (("primary_ref", DUP), f"{DUP}|primary_ref"),
    (("recreate", DUP), f"{DUP}|recreate"),
    (("verify_back", DUP), f"{DUP}|verify_back"),
    (("ticket_back", DUP, None, TKT), f"{DUP}|ticket_back|{TKT}"),
    (("conversation_back", DUP, None, "don:core:c/3"), f"{DUP}|conversation_back|don:core:c/3"),
]


@pytest.mark.parametrize("parts,name", GOLDEN)
def test_step_names_are_the_strings_on_disk_and_parse_back(parts, name):
    assert step_name(*parts) == name
    step = parse_step(name)
    assert step == Step(*parts)
    assert step_name(*step) == name


@pytest.mark.parametrize("parts", [("nonsense", DUP), ("merge",), ("merge", DUP, 1), ("backup", DUP),
                                   ("backup", DUP, 0), ("ticket", DUP, 1), ("ticket", "a|b", 1, TKT),
                                   ("ticket", DUP, 1, "x|y"), ("external_ref", DUP), ("retired", ""),
                                   ("ticket_back", DUP, 1, TKT), ("ticket_back", DUP), ("recreate", DUP, 1)])
def test_step_name_refuses_what_the_grammar_does_not_allow(parts):
    with pytest.raises(ValueError):
        step_name(*parts)


@pytest.mark.parametrize("name", ["", "merge", f"{DUP}|nonsense", f"{DUP}|backup", f"{DUP}|backup|x",
                                  f"{DUP}|backup|01", f"{DUP}|merge|1", f"|merge", f"{DUP}|ticket|1",
                                  f"{DUP}|ticket|1|{TKT}|more", f"{DUP}|ticket_back", f"{DUP}|ticket_back|a|b",
                                  f"{DUP}|recreate|1"])
def test_parse_step_refuses_a_name_outside_the_grammar(name):
    with pytest.raises(ValueError, match="not a valid journal step name"):
        parse_step(name)

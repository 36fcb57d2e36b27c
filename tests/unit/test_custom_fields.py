"""Contact references in custom fields: what names a contact, the swap, the schema a write names."""
import pytest

from backup import CustomFieldMove
from devrev_api.custom_fields import fields_naming, schema_spec, swap_in_value, swapped_fields
from merging.custom_field_moves import holds

DUP, PRIMARY, OTHER = "don:identity:x:revu/dup", "don:identity:x:revu/primary", "don:identity:x:revu/other"


def test_fields_naming_finds_lists_and_single_ids_only():
    obj = {"custom_fields": {"app_email_integration__members": [OTHER, DUP], "tnt__owner": DUP,
                             "tnt__region": "EMEA", "tnt__tags": ["a", "b"], "ctype__count": 3}}
    assert fields_naming(obj, DUP) == {"app_email_integration__members": [OTHER, DUP], "tnt__owner": DUP}
    assert fields_naming({"custom_fields": None}, DUP) == {} == fields_naming({}, DUP)


def test_swap_keeps_order_and_drops_the_repeat_it_makes():
    assert swap_in_value([OTHER, DUP, PRIMARY], DUP, PRIMARY) == [OTHER, PRIMARY]
    assert swap_in_value([DUP, OTHER], DUP, PRIMARY) == [PRIMARY, OTHER]
    assert swap_in_value(DUP, DUP, PRIMARY) == PRIMARY
    assert swap_in_value("EMEA", DUP, PRIMARY) == "EMEA"
    assert swapped_fields({"a__x": [DUP], "tnt__y": DUP}, DUP, PRIMARY) == {"a__x": [PRIMARY], "tnt__y": PRIMARY}


def test_schema_spec_names_each_fields_schema_from_its_prefix():
    assert schema_spec(["app_email_integration__members"], None) == {"apps": ["app_email_integration"]}
    assert schema_spec(["tnt__owner", "ctype__watchers", "zendesk__cc", "zendesk__to"], "email") == \
        {"tenant_fragment": True, "subtype": "email", "apps": ["zendesk"]}


@pytest.mark.parametrize("name, subtype", [("owner", None), ("__x", None), ("tnt__", None),
                                           ("ctype__watchers", None)])
def test_schema_spec_refuses_a_field_whose_schema_cannot_be_told(name, subtype):
    with pytest.raises(ValueError, match=name.split("__")[0] or "custom field"):
        schema_spec([name], subtype)


def test_holds():
    assert holds([OTHER, DUP], DUP) and holds(DUP, DUP)
    assert not holds([OTHER], DUP) and not holds(None, DUP) and not holds("x", DUP)


def test_custom_field_move_round_trips_and_refuses_a_bad_entry():
    move = CustomFieldMove.of("ticket", {"id": "don:core:x:ticket/1", "display_id": "TKT-1", "subtype": "email",
                                         "custom_fields": {"app_email_integration__members": [DUP]}}, DUP)
    assert move is not None and CustomFieldMove.from_json(move.to_json()) == move
    assert CustomFieldMove.of("ticket", {"id": "t", "custom_fields": {"a__b": [OTHER]}}, DUP) is None
    for bad in ({"kind": "issue", "id": "t", "fields": {"a__b": [DUP]}}, {"kind": "ticket", "id": "t", "fields": {}},
                {"kind": "ticket", "id": 5, "fields": {"a__b": [DUP]}}):
        with pytest.raises(ValueError):
            CustomFieldMove.from_json(bad)

"""``convert_units``: the skill as the engine calls it, and the contract kit's tool checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import trio
from scaivoice.conformance import run_tool_checks
from scaivoice.conformance.backend_kit.pytest_plugin import ToolContract
from scaivoice.engine import PluginHost, ToolContext, ToolFailed, ToolSpec

CONTEXT = ToolContext(tenant="acme", session_id="s-1", turn_id=1, call_id="call_1")


@pytest.fixture
def convert_units(host: PluginHost) -> ToolSpec:
    """The skill as the engine finds it: through the entry point, checked by the host."""
    return host.tool_specs()["convert_units"]


@pytest.mark.parametrize(
    ("arguments", "value", "text"),
    [
        ({"value": 5, "from_unit": "km", "to_unit": "mi"}, 3.107, "5 kilometres is 3.107 miles"),
        ({"value": 1, "from_unit": "mi", "to_unit": "m"}, 1609, "1 mile is 1609 metres"),
        ({"value": 12, "from_unit": "in", "to_unit": "ft"}, 1, "12 inches is 1 foot"),
        ({"value": 2.5, "from_unit": "lb", "to_unit": "g"}, 1134, "2.5 pounds is 1134 grams"),
        ({"value": 1, "from_unit": "gal", "to_unit": "l"}, 3.785, "1 US gallon is 3.785 litres"),
        ({"value": 100, "from_unit": "km/h", "to_unit": "mph"}, 62.14, None),
        ({"value": 100, "from_unit": "C", "to_unit": "F"}, 212, None),
        ({"value": -40, "from_unit": "F", "to_unit": "C"}, -40, None),
        ({"value": 0, "from_unit": "K", "to_unit": "C"}, -273.1, None),
        ({"value": 5, "from_unit": "km", "to_unit": "mi", "digits": 8}, 3.1068560, None),
    ],
)
async def test_conversions(
    convert_units: ToolSpec, arguments: dict[str, Any], value: float, text: str | None
) -> None:
    result = await convert_units.handler(arguments, CONTEXT)
    assert result["value"] == value
    assert result["unit"] == arguments["to_unit"]
    if text is not None:
        assert result["text"] == text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"value": 5, "from_unit": "km", "to_unit": "kg"}, "cannot convert length (km) to mass"),
        ({"value": -300, "from_unit": "C", "to_unit": "F"}, "-300 C is below absolute zero"),
    ],
)
async def test_what_it_cannot_serve_is_toolfailed(
    convert_units: ToolSpec, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolFailed, match=re.escape(message)) as caught:
        await convert_units.handler(arguments, CONTEXT)
    assert caught.value.code == "tool_failed"  # what the client's warning says


def test_the_declaration(convert_units: ToolSpec) -> None:
    assert convert_units.definition.name == "convert_units"  # what the model is told
    assert convert_units.parameters["required"] == ["value", "from_unit", "to_unit"]
    assert convert_units.permissions == frozenset()  # any session its tenant allows
    assert convert_units.timeout_s == 2.0
    assert convert_units.api_version == 1


# The contract kit, two ways: one call that returns a report, or a pytest class whose every
# test method is one check.


async def test_the_kit_passes_the_installed_skill(convert_units: ToolSpec) -> None:
    report = await run_tool_checks(
        convert_units,
        example_arguments={"value": 5, "from_unit": "km", "to_unit": "mi"},
        failing_arguments={"value": 5, "from_unit": "km", "to_unit": "kg"},
    )
    assert report.ok, report.format_text()


def _installed() -> ToolSpec:
    host = PluginHost()
    host.load_entry_points()
    return host.tool_specs()["convert_units"]


class TestConvertUnitsContract(ToolContract):
    example_arguments: ClassVar[Mapping[str, Any]] = {
        "value": 5,
        "from_unit": "km",
        "to_unit": "mi",
    }
    failing_arguments: ClassVar[Mapping[str, Any] | None] = {
        "value": 5,
        "from_unit": "km",
        "to_unit": "kg",
    }

    def make_tool(self) -> ToolSpec:
        return _installed()


async def test_a_call_in_a_cancelled_scope_is_harmless(convert_units: ToolSpec) -> None:
    # Pure computation has no checkpoint: the result comes back and the caller's scope
    # stops the caller at its next one. A skill that awaits something stops there instead.
    with trio.CancelScope() as scope:
        scope.cancel()
        result = await convert_units.handler(
            {"value": 1, "from_unit": "m", "to_unit": "cm"}, CONTEXT
        )
        assert result["value"] == 100
        await trio.lowlevel.checkpoint()
        pytest.fail("the cancelled scope did not stop the caller")  # pragma: no cover
    assert scope.cancelled_caught

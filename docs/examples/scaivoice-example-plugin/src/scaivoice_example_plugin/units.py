"""``convert_units``: a server skill that converts a quantity between units.

A skill is a tool the language model may call, run by the engine: the plugin declares it with
a :class:`~scaivoice.engine.ToolSpec` from its ``scaivoice_tools`` hook (see ``plugin.py``).
The model sees the name, the description and the JSON Schema of the arguments; when it calls
the tool, the engine repairs and validates the arguments against that schema and awaits
``convert_units(arguments, context)``. What the handler returns (anything JSON-serialisable) is
what the model reads; :class:`~scaivoice.engine.ToolFailed` tells the model why the tool cannot
serve a call.

Deterministic, no network, no state: lengths, masses, volumes, speeds and temperatures. The
reply carries a sentence written for speech (``"5 kilometres is 3.107 miles"``), because the
model of a voice bot reads it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from scaivoice.engine import ToolContext, ToolFailed

__all__ = ["DESCRIPTION", "NAME", "PARAMETERS", "UNITS", "Unit", "convert", "convert_units"]

NAME: Final = "convert_units"
DESCRIPTION: Final = (
    "Convert a quantity from one unit to another (length, mass, volume, speed, temperature). "
    "Use it whenever the user asks how much something is in another unit."
)


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit: what it measures, how it maps to the dimension's base unit, how it is said.

    ``value_in_base = value * factor + offset`` (an offset only for temperatures).
    """

    dimension: str
    factor: float
    singular: str
    plural: str
    offset: float = 0.0


UNITS: Final[Mapping[str, Unit]] = MappingProxyType(
    {
        # length (base: metre)
        "mm": Unit("length", 0.001, "millimetre", "millimetres"),
        "cm": Unit("length", 0.01, "centimetre", "centimetres"),
        "m": Unit("length", 1.0, "metre", "metres"),
        "km": Unit("length", 1000.0, "kilometre", "kilometres"),
        "in": Unit("length", 0.0254, "inch", "inches"),
        "ft": Unit("length", 0.3048, "foot", "feet"),
        "yd": Unit("length", 0.9144, "yard", "yards"),
        "mi": Unit("length", 1609.344, "mile", "miles"),
        # mass (base: kilogram)
        "g": Unit("mass", 0.001, "gram", "grams"),
        "kg": Unit("mass", 1.0, "kilogram", "kilograms"),
        "oz": Unit("mass", 0.028349523125, "ounce", "ounces"),
        "lb": Unit("mass", 0.45359237, "pound", "pounds"),
        # volume (base: litre)
        "ml": Unit("volume", 0.001, "millilitre", "millilitres"),
        "l": Unit("volume", 1.0, "litre", "litres"),
        "cup": Unit("volume", 0.2365882365, "US cup", "US cups"),
        "gal": Unit("volume", 3.785411784, "US gallon", "US gallons"),
        # speed (base: metre per second)
        "m/s": Unit("speed", 1.0, "metre per second", "metres per second"),
        "km/h": Unit("speed", 1 / 3.6, "kilometre per hour", "kilometres per hour"),
        "mph": Unit("speed", 0.44704, "mile per hour", "miles per hour"),
        "kn": Unit("speed", 1852 / 3600, "knot", "knots"),
        # temperature (base: kelvin)
        "C": Unit("temperature", 1.0, "degree Celsius", "degrees Celsius", offset=273.15),
        "F": Unit(
            "temperature", 5 / 9, "degree Fahrenheit", "degrees Fahrenheit", 273.15 - 160 / 9
        ),
        "K": Unit("temperature", 1.0, "kelvin", "kelvins"),
    }
)

#: The arguments' JSON Schema: what the model is told, and what the engine validates (plain
#: JSON values: dicts, lists, strings, numbers).
PARAMETERS: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "description": "the quantity to convert"},
        "from_unit": {"type": "string", "enum": list(UNITS), "description": "its unit"},
        "to_unit": {"type": "string", "enum": list(UNITS), "description": "the unit wanted"},
        "digits": {
            "type": "integer",
            "minimum": 1,
            "maximum": 12,
            "description": "significant digits of the answer (default 4)",
        },
    },
    "required": ["value", "from_unit", "to_unit"],
    "additionalProperties": False,
}


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit``, expressed in ``to_unit``.

    Raises:
        ToolFailed: an unknown unit, or units of different dimensions.
    """
    source, target = UNITS.get(from_unit), UNITS.get(to_unit)
    if source is None or target is None:
        unknown = from_unit if source is None else to_unit
        raise ToolFailed(f"unknown unit {unknown!r}; known: {', '.join(UNITS)}")
    if source.dimension != target.dimension:
        raise ToolFailed(
            f"cannot convert {source.dimension} ({from_unit}) to {target.dimension} ({to_unit})"
        )
    base = value * source.factor + source.offset
    return (base - target.offset) / target.factor


async def convert_units(arguments: Mapping[str, Any], context: ToolContext) -> dict[str, Any]:
    """The handler: ``arguments`` are already validated against :data:`PARAMETERS`.

    Returns ``{"value", "unit", "text"}``; ``text`` is a sentence to say. Pure computation, so
    there is nothing to cancel mid-way and no checkpoint is needed: a skill that waits on
    something (a service, a file) awaits it, and cancelling (the user interrupted, the call's
    deadline) stops it there.

    Raises:
        ToolFailed: units of different dimensions (``"km"`` to ``"kg"``), or a temperature
            below absolute zero.
    """
    value = float(arguments["value"])
    from_unit, to_unit = arguments["from_unit"], arguments["to_unit"]
    digits = int(arguments.get("digits", 4))
    result = convert(value, from_unit, to_unit)
    if UNITS[from_unit].dimension == "temperature" and convert(value, from_unit, "K") < 0:
        raise ToolFailed(f"{value:g} {from_unit} is below absolute zero")
    rounded = float(f"{result:.{digits}g}")
    return {
        "value": rounded,
        "unit": to_unit,
        "text": f"{_say(value, from_unit)} is {_say(rounded, to_unit)}",
    }


def _say(value: float, unit: str) -> str:
    names = UNITS[unit]
    return f"{value:g} {names.singular if value == 1 else names.plural}"

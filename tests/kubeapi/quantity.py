"""Kubernetes resource quantities (``500m``, ``2Gi``, ``1e3``) as exact fractions.

The scheduler compares requests with node capacity and the quota admission sums requests, so both
need exact arithmetic: ``Fraction`` avoids the float rounding that would make ``0.1 + 0.2`` cores
exceed ``300m``.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["parse_quantity", "format_quantity"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_PATTERN = re.compile(
    r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$"
)


def parse_quantity(value: str | int | float | None) -> Fraction:
    """Parse a quantity; raises ``ValueError`` for what the real API would reject."""
    if value is None:
        return Fraction(0)
    if isinstance(value, (int, float)):
        return Fraction(str(value))
    match = _PATTERN.match(str(value).strip())
    if not match:
        raise ValueError(
            f"quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}"
        )
    number, exponent, suffix = match.groups()
    result = Fraction(number)
    if exponent:
        result *= Fraction(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        result *= _BINARY[suffix]
    else:
        result *= _DECIMAL[suffix or ""]
    return result


def format_quantity(value: Fraction, resource: str = "") -> str:
    """Format a quantity the way the API server's canonical form usually looks.

    CPU-like values use millis (``1500m``) unless whole; memory-like values use the largest binary
    suffix that divides them exactly; everything else is a plain integer when it is one.
    """
    if value.denominator == 1:
        number = value.numerator
        if resource.endswith(("memory", "storage")) and number:
            for suffix, factor in reversed(_BINARY.items()):
                if number % factor == 0:
                    return f"{number // factor}{suffix}"
        return str(number)
    millis = value * 1000
    if millis.denominator == 1:
        return f"{millis.numerator}m"
    return str(float(value))

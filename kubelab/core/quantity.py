"""Kubernetes resource quantities ("500m", "8Gi", "1e3") as exact decimals.

The sync ``kubernetes`` client has ``kubernetes.utils.parse_quantity``; ``kubernetes_asyncio`` (the
client the core depends on) has none, and pulling in the whole sync client for twenty lines is not
worth it. The rules follow apimachinery's ``resource.Quantity``: an optional sign, a decimal number,
then a binary suffix (Ki..Ei), a decimal suffix (n, u, m, k, M..E) or a decimal exponent (e3).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from kubelab.core.text import shorten

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_PATTERN = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


#: the largest quantity Kubernetes stores (an int64); larger ones the API server refuses
MAX_QUANTITY = Decimal(2**63 - 1)


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """Return *value* as a :class:`~decimal.Decimal` ("500m" → 0.5, "1Gi" → 1073741824).

    Raises :class:`QuantityError` with the offending value for anything else, including booleans
    (YAML turns ``yes`` into ``True``, and ``True`` must not become one CPU), infinities and NaN,
    and values beyond what Kubernetes can store (:data:`MAX_QUANTITY`).
    """
    result = _parse(value)
    if not result.is_finite():
        raise QuantityError(f"{shorten(value)} is not a finite quantity")
    if abs(result) > MAX_QUANTITY:
        raise QuantityError(f"{shorten(value)} is too large (Kubernetes stores at most 2^63-1)")
    return result




def _parse(value: str | int | float | Decimal) -> Decimal:
    if isinstance(value, bool):
        raise QuantityError(f"{shorten(value)} is not a quantity")
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"{shorten(value)} is not a quantity")
    match = _PATTERN.fullmatch(value.strip())
    if not match:
        raise QuantityError(
            f"{shorten(value)} is not a quantity (use a number with an optional suffix, like 500m, 2, 8Gi)"
        )
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the pattern admits only valid numbers
        raise QuantityError(f"{value!r} is not a quantity") from e
    if suffix in _BINARY:
        return base * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return base.scaleb(_DECIMAL[suffix])
    return base.scaleb(int(suffix[1:]))


def format_bytes(value: Decimal | int) -> str:
    """A byte count for people: 8589934592 → "8 GiB", 1500000000 → "1.4 GiB"."""
    amount = Decimal(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(amount) < 1024 or unit == "PiB":
            text = f"{amount:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def format_cpu(value: Decimal | int | float) -> str:
    """CPUs for people: 0.5 → "0.5", 2 → "2"."""
    text = f"{Decimal(str(value)):.3f}".rstrip("0").rstrip(".")
    return text or "0"

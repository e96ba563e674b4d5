"""Small helpers about object metadata and time, shared by the store and the controllers."""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "now",
    "rfc3339",
    "micro_time",
    "new_uid",
    "name_suffix",
    "owner_reference",
    "controller_of",
    "labels_of",
    "annotations_of",
]

#: the alphabet of generateName suffixes (no vowels, so no words; as k8s.io/apiserver uses)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


def rfc3339(moment: datetime.datetime | None = None) -> str:
    """Second-precision timestamps, as in ``metadata.creationTimestamp``."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime.datetime | None = None) -> str:
    """Microsecond-precision timestamps, as in ``Event.eventTime``."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def name_suffix(rng: random.Random | None = None) -> str:
    chooser = rng or random
    return "".join(chooser.choice(_SUFFIX_ALPHABET) for _ in range(5))


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}

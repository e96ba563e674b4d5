"""Create an object, or bring the one that exists to what is wanted.

kubelab writes a few objects whose name it chooses (a user's namespace and its quota, Role and
ConfigMaps; a job; later an endpoint's Deployments and Service). :func:`create_or_replace` is the
one way it does: create; on ``409 AlreadyExists`` decide from the existing object — replace it
with the wanted one, keep it, or merge the two — and, when the replacement is conditional on the
version read, read again and redo the merge on ``409 Conflict`` (someone changed it in between).
Every call goes through a :class:`~kubelab.core.kube.retry.RetryPolicy`.

The API calls are given as an :class:`ObjectApi`, closures over the typed ``kubernetes_asyncio``
methods of the object's kind, so this module knows no kind.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubelab.core.kube.retry import RetryPolicy

__all__ = ["Exists", "ObjectApi", "create_or_replace"]


@dataclass(frozen=True)
class ObjectApi:
    """The calls on one named object: ``create(body)``, ``read()`` (the existing object as an API
    dict), ``replace(body)``; ``read``/``replace`` may be None where the kind is never updated."""

    create: Callable[[dict[str, Any]], Awaitable[Any]]
    read: Callable[[], Awaitable[dict[str, Any]]] | None = None
    replace: Callable[[dict[str, Any]], Awaitable[Any]] | None = None


class Exists(enum.Enum):
    """What to do with an object that exists already (without reading it)."""

    #: put the wanted object in its place, unconditionally (no read: one request)
    REPLACE = "replace"
    #: leave it as it is (e.g. a namespace, whose labels are the admin's after creation)
    KEEP = "keep"


#: what decides from the existing object: the object to write in its place (conditional on the
#: version read), or None to keep the existing one as it is
Decide = Callable[[dict[str, Any]], "dict[str, Any] | None"]


async def create_or_replace(obj: dict[str, Any], api: ObjectApi, *, policy: RetryPolicy,
                            exists: Exists | Decide = Exists.REPLACE,
                            on_retry: Callable[[str, float], None] | None = None,
                            conflicts: int = 5) -> Any:
    """Create *obj*, or deal with the existing one as *exists* says; return what the API returned
    for the write (the existing object when it was kept, None for ``Exists.KEEP``).

    A final API answer is raised as an ``ApiException``; a transient one that outlasts *policy*
    as :class:`~kubelab.core.kube.retry.RetriesExhausted`."""
    try:
        return await policy.call(lambda: api.create(obj), on_retry=on_retry)
    except ApiException as e:
        if e.status != 409:
            raise
    if exists is Exists.KEEP:
        return None
    if exists is Exists.REPLACE:
        if api.replace is None:
            return None
        replace = api.replace

        async def put_wanted() -> Any:
            return await replace(obj)

        return await policy.call(put_wanted, on_retry=on_retry)
    if api.read is None:
        raise TypeError("deciding from the existing object needs ObjectApi.read")
    read, replace_ = api.read, api.replace
    for attempt in range(conflicts):
        existing = await policy.call(read, on_retry=on_retry)
        wanted = exists(existing)
        if wanted is None:
            return existing
        if replace_ is None:
            raise TypeError("replacing the existing object needs ObjectApi.replace")
        version = (existing.get("metadata") or {}).get("resourceVersion")
        body = dict(wanted, metadata=dict(wanted["metadata"], resourceVersion=version))
        async def put(body: dict[str, Any] = body) -> Any:
            assert replace_ is not None
            return await replace_(body)

        try:
            return await policy.call(put, on_retry=on_retry)
        except ApiException as e:
            if e.status != 409 or attempt == conflicts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover

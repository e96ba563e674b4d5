"""The core Kubernetes layer (kubelab/core/kube): the retry policy, the list+watch cache and
create-or-replace, through the real ``kubernetes_asyncio`` client against the API test server."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio.client.exceptions import ApiException

from kubelab.core.kube import (
    Exists,
    ObjectApi,
    Reflector,
    RetriesExhausted,
    RetryPolicy,
    create_or_replace,
)
from kubelab.core.kube.cache import namespaced_key


@pytest.fixture
def emulated(kube_cluster: Any) -> Any:
    kube_cluster.require_emulator("fault injection")
    return kube_cluster


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"app": "kube-layer"}}, "data": data}


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# -- RetryPolicy ------------------------------------------------------------------------------


def test_delays_grow_to_the_cap_and_stay_within_the_jitter() -> None:
    policy = RetryPolicy(first_delay=0.1, factor=2, max_delay=0.5, jitter=0.1)
    delays = policy.delays()
    got = [next(delays) for _ in range(6)]
    for value, base in zip(got, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5], strict=True):
        assert base * 0.9 <= value <= base * 1.1
    exact = RetryPolicy(first_delay=1, factor=3, max_delay=10, jitter=0).delays()
    assert [next(exact) for _ in range(4)] == [1, 3, 9, 10]


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"jitter": 1.0}, {"jitter": -0.1}])
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


async def test_transient_answers_are_retried_and_final_ones_are_not(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    policy = RetryPolicy(attempts=5, deadline=None, first_delay=0.01, max_delay=0.02)
    emulated.faults.fail(503, times=2, method="POST", path=r"/configmaps$")
    told: list[str] = []
    await policy.call(lambda: core.create_namespaced_config_map(kube_namespace, _cm("a")),
                      on_retry=lambda problem, delay: told.append(problem))
    assert told == ["the Kubernetes API answered 503 Service Unavailable"] * 2
    # a 409 is an answer, not a hiccup: raised at once, not retried
    emulated.faults.clear()
    calls = 0

    async def create() -> Any:
        nonlocal calls
        calls += 1
        return await core.create_namespaced_config_map(kube_namespace, _cm("a"))

    with pytest.raises(ApiException) as e:
        await policy.call(create)
    assert e.value.status == 409 and calls == 1


async def test_the_policy_gives_up_by_count_and_by_deadline(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    emulated.faults.fail(500, method="GET", path=r"/configmaps$")
    by_count = RetryPolicy(attempts=3, deadline=None, first_delay=0.01)
    with pytest.raises(RetriesExhausted) as e:
        await by_count.call(lambda: core.list_namespaced_config_map(kube_namespace))
    assert e.value.attempts == 3 and "500" in e.value.problem
    assert isinstance(e.value.cause, ApiException) and e.value.cause.status == 500
    by_time = RetryPolicy(deadline=0.3, first_delay=0.05, max_delay=0.05, jitter=0)
    with pytest.raises(RetriesExhausted) as e:
        await by_time.call(lambda: core.list_namespaced_config_map(kube_namespace))
    assert 3 <= e.value.attempts <= 8 and e.value.elapsed <= 0.3


async def test_a_request_that_takes_too_long_counts_as_transient(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    emulated.faults.delay(1.0, times=1, method="GET", path=r"/configmaps$")
    policy = RetryPolicy(attempts=3, deadline=None, first_delay=0.01, request_timeout=0.2)
    told: list[str] = []
    await policy.call(lambda: core.list_namespaced_config_map(kube_namespace),
                      on_retry=lambda problem, delay: told.append(problem))
    assert told == ["the Kubernetes API did not answer (TimeoutError)"]


# -- Reflector --------------------------------------------------------------------------------


async def test_a_reflector_lists_then_follows_the_watch(kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    await core.create_namespaced_config_map(kube_namespace, _cm("before", k="1"))
    changes = 0

    def changed() -> None:
        nonlocal changes
        changes += 1

    lock = threading.Condition()
    reflector = Reflector(functools.partial(core.list_namespaced_config_map, kube_namespace,
                                            label_selector="app=kube-layer"),
                          what="config maps", lock=lock, on_change=changed, watch_timeout=5)
    reflector.start()
    try:
        await reflector.wait_synced(10)
        assert set(reflector.store) == {"before"} and reflector.synced.is_set()
        await core.create_namespaced_config_map(kube_namespace, _cm("after", k="2"))
        await core.create_namespaced_config_map(kube_namespace, {
            "metadata": {"name": "other", "labels": {"app": "not-ours"}}})
        await _until(lambda: "after" in reflector.store)
        await core.patch_namespaced_config_map("before", kube_namespace, {"data": {"k": "3"}})
        await _until(lambda: reflector.store["before"]["data"] == {"k": "3"})
        await core.delete_namespaced_config_map("after", kube_namespace)
        await _until(lambda: "after" not in reflector.store)
        assert "other" not in reflector.store  # the selector is the server's
        assert changes >= 4
    finally:
        await reflector.stop()


async def test_a_reflector_relists_after_410_and_resumes_after_a_dropped_watch(
        emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    lister = functools.partial(core.list_namespaced_config_map, kube_namespace)
    reflector = Reflector(lister, what="config maps", watch_timeout=5)
    reflector.start()
    try:
        await reflector.wait_synced(10)
        emulated.faults.drop_watch(after_events=1)
        for i in range(3):
            await core.create_namespaced_config_map(kube_namespace, _cm(f"c{i}"))
        await _until(lambda: {"c0", "c1", "c2"} <= set(reflector.store))
        emulated.faults.clear()
        # the next watch is told its version is too old: the reflector lists again
        lists = len(emulated.requests.filter(verb="list", resource="configmaps"))
        emulated.faults.fail(410, times=1, method="GET", watch=True, path=r"/configmaps$")
        await core.delete_namespaced_config_map("c0", kube_namespace)
        await _until(lambda: "c0" not in reflector.store)
        assert len(emulated.requests.filter(verb="list", resource="configmaps")) > lists
    finally:
        await reflector.stop()


async def test_an_optional_reflector_refused_its_list_stays_empty(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    emulated.faults.fail(403, method="GET", path=r"/resourcequotas$")
    reflector = Reflector(functools.partial(core.list_namespaced_resource_quota, kube_namespace),
                          what="quotas", optional=True)
    task = reflector.start()
    await reflector.wait_synced(10)
    await asyncio.wait_for(task, 5)  # it stopped: nothing to watch
    assert reflector.available is False and reflector.store == {}


async def test_a_failing_first_list_is_told_to_waiters_and_retried(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    emulated.faults.fail(500, times=1, method="GET", path=r"/configmaps$")
    reflector = Reflector(functools.partial(core.list_namespaced_config_map, kube_namespace),
                          what="config maps")
    reflector.start()
    try:
        with pytest.raises(Exception, match="HTTP 500"):
            await reflector.wait_synced(10)
        await reflector.wait_synced(10)  # the next try went through
        assert reflector.ready
    finally:
        await reflector.stop()


async def test_one_shared_reflector_per_key(kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    made = 0

    def factory() -> Reflector:
        nonlocal made
        made += 1
        return Reflector(core.list_pod_for_all_namespaces, what="pods", key=namespaced_key)

    first = Reflector.shared(("test", "pods"), factory)
    assert Reflector.shared(("test", "pods"), factory) is first and made == 1
    await Reflector.stop_all()
    assert Reflector.shared(("test", "pods"), factory) is not first and made == 2
    await Reflector.stop_all()


# -- create_or_replace ------------------------------------------------------------------------


def _config_map_api(core: Any, namespace: str, name: str) -> ObjectApi:
    async def read() -> dict[str, Any]:
        return dict(core.api_client.sanitize_for_serialization(
            await core.read_namespaced_config_map(name, namespace)))

    return ObjectApi(create=lambda body: core.create_namespaced_config_map(namespace, body),
                     read=read,
                     replace=lambda body: core.replace_namespaced_config_map(name, namespace, body))


async def test_create_then_replace_or_keep(kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    policy = RetryPolicy(attempts=3, deadline=None, first_delay=0.01)
    api = _config_map_api(core, kube_namespace, "x")
    await create_or_replace(_cm("x", v="1"), api, policy=policy)
    await create_or_replace(_cm("x", v="2"), api, policy=policy)
    assert (await core.read_namespaced_config_map("x", kube_namespace)).data == {"v": "2"}
    assert await create_or_replace(_cm("x", v="3"), api, policy=policy, exists=Exists.KEEP) is None
    assert (await core.read_namespaced_config_map("x", kube_namespace)).data == {"v": "2"}


async def test_a_merge_is_redone_when_someone_changed_the_object_in_between(
        emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    policy = RetryPolicy(attempts=3, deadline=None, first_delay=0.01)
    api = _config_map_api(core, kube_namespace, "team")
    await core.create_namespaced_config_map(kube_namespace, _cm("team", alice="1"))
    seen: list[dict[str, str]] = []

    def merge(existing: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(existing.get("data") or {}))
        if len(seen) == 1:  # a teammate's spawn writes between our read and our write
            emulated.faults.fail(409, times=1, method="PUT", path=r"/configmaps/team$")
        return _cm("team", **existing.get("data", {}), bob="1")

    await create_or_replace(_cm("team", bob="1"), api, policy=policy, exists=merge)
    assert len(seen) == 2  # read again after the conflict, merged again
    assert (await core.read_namespaced_config_map("team", kube_namespace)).data == {"alice": "1", "bob": "1"}

    def keep(existing: dict[str, Any]) -> None:
        return None

    kept = await create_or_replace(_cm("team", carol="1"), api, policy=policy, exists=keep)
    assert kept["data"] == {"alice": "1", "bob": "1"}

"""``ProfileSpawner``: KubeSpawner, configured per user from ``kubelab.yaml``.

JupyterHub entry point ``kubelab`` (``c.JupyterHub.spawner_class = "kubelab"``). It subclasses
KubeSpawner and only *configures* it:

* ``profile_list`` is a callable that generates KubeSpawner's profile list for the user from the
  admin config, filtered by their JupyterHub groups (:mod:`kubelab.spawner.profiles`);
  KubeSpawner's own ``_load_profile`` applies the three-layer override merge.
* ``options_form`` renders kubelab's chooser with live GPU availability and team quota, computed
  from :class:`~kubelab.spawner.cluster_state.ClusterState`: one list+watch cache of nodes and one
  of pods per process (the core's :class:`~kubelab.core.kube.cache.Reflector`), shared by every
  spawner — no API request per page view.
* ``user_options`` are validated on the server (JupyterHub's ``apply_user_options`` step, before
  anything is created) and refused with HTTP 400 and a message.
* The pod gets the GPU limits, node selector and tolerations, a memory-backed ``/dev/shm``, the
  chosen datasets, kubelab labels, the restricted security context and the user's service
  account, all through KubeSpawner's own traits. The user's namespace is created with a
  ResourceQuota, LimitRange, ServiceAccount, Role, RoleBinding and the notebook ConfigMap
  (:mod:`kubelab.spawner.provision`), once per process per content.
* A GPU pod the scheduler cannot place fails after ``gpu_unschedulable_timeout`` seconds with a
  message naming the GPU type, how many are free and what to try; the pod is deleted and every
  trait the spawn set is put back (no override leaks into the next spawn).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from traitlets import Bool, Float, Unicode, default

from kubelab.core import admission, objects
from kubelab.core.config import KubelabConfig
from kubelab.core.kube import RetryPolicy
from kubelab.core.notebook_env import NotebookDataset, NotebookEnv
from kubelab.core.paths import NOTEBOOK_CONFIG_PATH
from kubelab.core.podsecurity import violations
from kubelab.spawner import profiles
from kubelab.spawner.base import KubelabSpawnerMixin, default_config_path, spawn_error
from kubelab.spawner.cluster_state import ClusterState
from kubelab.spawner.pod_settings import POD_TRAITS, pod_traits
from kubelab.spawner.profiles import Availability, Choice, InvalidOptions, UserInfo
from kubelab.spawner.provision import Provisioner, namespace_objects

# --------------------------------------------------------------------------------------------------
# The spawner


class ProfileSpawner(KubelabSpawnerMixin, KubeSpawner):
    """KubeSpawner with kubelab's per-user profile chooser, data mounts, namespaces and quotas.

    Configure it with the admin config file (``kubelab_config``); KubeSpawner's own settings
    (``k8s_api_*``, ``storage_*`` for the home PVC, ``start_timeout``, ...) still apply.
    """

    # KubeSpawner traits this class assigns (annotations for the type checker only)
    user_options: dict[str, Any]
    extra_labels: dict[str, str]
    extra_annotations: dict[str, str]
    volumes: Any
    volume_mounts: Any
    environment: dict[str, Any]
    pod_security_context: dict[str, Any]
    container_security_context: dict[str, Any]

    kubelab_config = Unicode(
        config=True,
        help="""Path of the kubelab admin config (``kubelab.yaml``).

        Default: ``$KUBELAB_CONFIG``, else the example shipped with kubelab. The file is re-read
        when it changes; an edit that breaks it is logged and the previous version kept. Check a
        file with ``kubelab config check PATH``.
        """,
    )

    @default("kubelab_config")
    def _default_kubelab_config(self) -> str:
        return default_config_path(local=False)

    gpu_unschedulable_timeout = Float(
        60.0,
        config=True,
        help="""Seconds a GPU notebook pod may stay unschedulable before the spawn fails.

        When the scheduler reports that no node can give the requested GPUs (e.g. ``Insufficient
        nvidia.com/gpu``), waiting the full ``start_timeout`` helps nobody: after this many
        seconds the pending pod is deleted and the user sees which GPU type is short, how many
        are free and what to try. Count from the pod's creation. 0 disables (wait for
        ``start_timeout``); raise it when a cluster autoscaler adds GPU nodes on demand.
        """,
    )

    refuse_unavailable_gpus = Bool(
        False,
        config=True,
        help="""Refuse (HTTP 400) a GPU count that no node can give right now, per the cache.

        Off by default: the cache may be a moment old, and an autoscaler may add nodes, so such
        a choice is marked in the form and left to ``gpu_unschedulable_timeout``.
        """,
    )

    watch_cluster = Bool(
        True,
        config=True,
        help="""Keep a shared list+watch cache of all nodes and pods to show GPU availability and
        team GPU usage in the chooser and to check quotas. Needs cluster-wide ``list``/``watch``
        on ``nodes`` and ``pods`` for the hub's service account (docs/spawner.md). When off, the
        form shows no availability and only the static quota checks apply.
        """,
    )

    availability_wait = Float(
        3.0,
        config=True,
        help="""Seconds the first form render waits for the cluster cache to load; after that
        the form says availability is not known yet rather than keep the user waiting.""",
    )

    manage_namespace_objects = Bool(
        True,
        config=True,
        help="""Create, in each user's namespace, the ResourceQuota (from the team's
        ``user_quota``, or ``quota`` for a shared team namespace), a LimitRange, the
        ``kubelab-user`` ServiceAccount with its Role and RoleBinding, and the
        ``kubelab-notebook`` ConfigMap, and run the notebook as that ServiceAccount. Each is
        written once per hub process per content (re-written when the config changes).""",
    )

    notebook_service_account = Unicode(
        objects.SERVICE_ACCOUNT,
        config=True,
        help="ServiceAccount the notebook runs as (created by kubelab when ``manage_namespace_objects``).",
    )

    # -- KubeSpawner defaults kubelab changes -------------------------------------------------

    @default("enable_user_namespaces")
    def _default_user_namespaces(self) -> bool:
        # Each user (or team) gets the namespace the config's team pattern names.
        return True

    @default("common_labels")
    def _default_common_labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "jupyterhub",
            objects.MANAGED_BY_LABEL: objects.MANAGED_BY,
            "app": "jupyterhub",
            "heritage": "jupyterhub",
        }

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        return _profile_list

    @default("options_form")
    def _default_options_form(self) -> Any:
        return _options_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return profiles.options_from_form

    # -- the config and the user ---------------------------------------------------------------

    def unusable_datasets(self, config: KubelabConfig) -> dict[str, str]:
        level = config.pod_security.level
        return {
            d.name: reason for d in config.datasets
            if (reason := objects.volume_allowed(d, level)) is not None
        }

    async def availability(self, *, wait: float | None = None) -> Availability:
        """What the chooser shows and validation checks against, from the shared cache only."""
        config = self.kubelab
        user = self.user_info()
        unusable = self.unusable_datasets(config)
        if not self.watch_cluster:
            return Availability(unusable_datasets=unusable, known=False)
        try:
            state = await ClusterState.get(self.api, wait=self.availability_wait if wait is None else wait)
        except Exception as e:  # the form must render even when the API is unreachable
            self.log.warning("GPU availability unavailable: %s", e)
            return Availability(unusable_datasets=unusable, known=False)
        if not state.ready:
            return Availability(unusable_datasets=unusable, known=False)
        return Availability(
            gpus=state.gpu_availability(config),
            quota=state.quota_usage(config, user, exclude=self._pod_key(user)),
            unusable_datasets=unusable,
        )

    def user_namespace(self, user: UserInfo | None = None) -> tuple[str, str | None]:
        """(namespace, team) the config gives the user (``teams.<t>.namespace``)."""
        user = user or self.user_info()
        return objects.user_namespace(self.kubelab, username=user.name, groups=sorted(user.groups))

    def _pod_key(self, user: UserInfo | None = None) -> str:
        """The reflectors' key of this server's pod, in the namespace the config gives the user."""
        namespace = self.user_namespace(user)[0] if self.enable_user_namespaces else self.namespace
        return f"{namespace}/{self.pod_name}"

    def _reserve_gpus(self, choice: Choice) -> None:
        """Hold *choice*'s GPUs against the team quota until the cache sees the pod (see
        :meth:`ClusterState.reserve`), so concurrent spawns cannot overrun it."""
        state = ClusterState.current()
        if state is None or not choice.gpus:
            return
        user = self.user_info()
        team = self.kubelab.team_for(sorted(user.groups))
        if team is None:
            return
        state.reserve(self._pod_key(user), team=team[0], user=user.name, gpus=choice.gpus,
                      ttl=self.start_timeout + self.k8s_api_request_retry_timeout)

    def _release_gpus(self) -> None:
        state = ClusterState.current()
        if state is not None:
            state.release(self._pod_key())

    # -- validation: JupyterHub's apply_user_options step (HTTP 400, nothing created yet) ------

    async def validate_options(self, user_options: Any, *, reserve: bool = False) -> Choice:
        """Validate untrusted *user_options* into a :class:`Choice` or raise HTTP 400; with
        *reserve*, hold the choice's GPUs against the team quota until the pod is seen. Run first
        by JupyterHub's apply_user_options step (:class:`~kubelab.spawner.base.KubelabSpawnerMixin`)
        and again, for GPU choices, when the spawn is committed (:meth:`load_user_options`)."""
        availability = await self.availability()
        try:
            choice = profiles.validate_user_options(
                self.kubelab, self.user_info(), user_options, availability,
                refuse_unavailable=self.refuse_unavailable_gpus,
            )
        except InvalidOptions as e:
            raise self.refuse(e) from None
        if reserve:
            # no await between the check and the reservation: another spawn cannot slip in
            self._reserve_gpus(choice)
        else:
            self._kubelab_choice = choice
            self._kubelab_validated = (copy.deepcopy(user_options), self.kubelab)
        return choice

    # -- applying the choice --------------------------------------------------------------------

    _kubelab_choice: Choice | None = None
    _kubelab_pristine: dict[str, Any] | None = None
    _kubelab_failure: BaseException | None = None
    _kubelab_validated: tuple[Any, KubelabConfig] | None = None

    def _snapshot(self) -> None:
        if self._kubelab_pristine is None:
            self._kubelab_pristine = {k: copy.deepcopy(getattr(self, k)) for k in POD_TRAITS}

    def restore_traits(self) -> None:
        """Put back every trait a spawn sets (:data:`~kubelab.spawner.pod_settings.POD_TRAITS`) to
        the admin's value, so nothing of one spawn (a GPU spawn's limits) stays for the next."""
        if self._kubelab_pristine is not None:
            self._set_traits(self._kubelab_pristine)

    def _set_traits(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            if getattr(self, k) != v:  # setting a trait runs its validation: only when changed
                setattr(self, k, copy.deepcopy(v))

    async def load_user_options(self) -> None:
        self._snapshot()
        self.restore_traits()
        # validated here unless the apply_user_options step just did it for these very options
        # (start() may be called without it: JupyterHub < 5.3, or tests)
        validated = self._kubelab_validated
        self._kubelab_validated = None
        if (validated is not None and self._kubelab_choice is not None and not self._kubelab_choice.gpus
                and validated == (self.user_options, self.kubelab)):
            choice = self._kubelab_choice
        else:
            # GPU choices are checked again against the quota, now that the spawn is committed,
            # and their GPUs reserved in the same step
            choice = await self.validate_options(self.user_options, reserve=True)
        self._kubelab_choice = choice
        config = self.kubelab
        user = self.user_info()
        namespace, team = self.user_namespace(user)
        if self.enable_user_namespaces:
            self.namespace = namespace
            self.dns_name = self.dns_name_template.format(namespace=namespace, name=self.pod_name)
        self._set_traits(self.pod_traits(config, choice, user, team))
        await self._check_dataset_claims(choice, user)

    #: (API server, namespace, claim) → monotonic time a dataset's claim was last seen there
    _claims_seen: dict[tuple[str, str, str], float] = {}
    #: how long a claim seen to exist is not looked up again
    claim_recheck_seconds = 300.0

    async def _check_dataset_claims(self, choice: Choice, user: UserInfo) -> None:
        """Refuse the spawn (HTTP 400, nothing created) when a chosen PVC dataset's claim does not
        exist in the user's namespace: a PVC lives in one namespace, and the pod would otherwise
        wait, Pending, for the whole start timeout. Other API errors (e.g. the hub may not read
        claims) let the spawn go on; the pod's events then say what is wrong."""
        host = self.api.api_client.configuration.host
        now = time.monotonic()
        for m in choice.datasets:
            source = objects.expand_source(m.dataset.source, username=user.name)
            if source.pvc is None:
                continue
            claim = source.pvc.claim_name
            key = (host, self.namespace, claim)
            if now - self._claims_seen.get(key, float("-inf")) < self.claim_recheck_seconds:
                continue
            try:
                await asyncio.wait_for(
                    self.api.read_namespaced_persistent_volume_claim(claim, self.namespace),
                    self.k8s_api_request_timeout)
            except ApiException as e:
                if e.status != 404:
                    self.log.warning("Could not check claim %s/%s of dataset %s: %s",
                                     self.namespace, claim, m.dataset.name, e.reason)
                    continue
                raise spawn_error(  # _start's clean-up releases the GPUs and restores traits
                    f"Dataset {m.dataset.name!r} cannot be mounted: its PersistentVolumeClaim "
                    f"{claim!r} does not exist in namespace {self.namespace!r}. Start without this "
                    f"dataset, or ask your hub admin to create the claim there.",
                    reason="dataset-claim-missing",
                ) from None
            except asyncio.TimeoutError:
                self.log.warning("Timed out checking claim %s/%s", self.namespace, claim)
                continue
            self._claims_seen[key] = now

    def pod_traits(self, config: KubelabConfig, choice: Choice, user: UserInfo,
                   team: str | None) -> dict[str, Any]:
        """What the pod of *choice* gets (:func:`~kubelab.spawner.pod_settings.pod_traits`), from
        the admin's settings of this spawner."""
        assert self._kubelab_pristine is not None
        base = self._kubelab_pristine
        managed = self.manage_namespace_objects
        env = self.notebook_env(choice, user, team, config_path=NOTEBOOK_CONFIG_PATH if managed else None)
        return pod_traits(
            config, choice, user, team=team, base=base,
            base_volumes=list(self._sorted_dict_values(base["volumes"])),
            base_mounts=list(self._sorted_dict_values(base["volume_mounts"])),
            env=env.to_env(),
            settings_config_map=objects.notebook_config_map_name(user.name) if managed else None,
            service_account=self.notebook_service_account if managed else None,
        )

    def home_volume(self) -> tuple[str | None, str | None]:
        """(claim name, mount path) of the home volume: the volume of KubeSpawner's PVC
        (``{pvc_name}``, as hub_config/jupyterhub_config.py and Zero to JupyterHub declare it)
        and where it is mounted; (None, None) without one."""
        for v in self._sorted_dict_values(self.volumes):
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim in ("{pvc_name}", self.pvc_name):
                mount = next((m for m in self._sorted_dict_values(self.volume_mounts)
                              if m.get("name") == v.get("name") and not m.get("subPath")), None)
                return self.pvc_name, (mount or {}).get("mountPath")
        return None, None

    def notebook_env(self, choice: Choice, user: UserInfo, team: str | None, *,
                     config_path: str | None) -> NotebookEnv:
        """What this spawn tells the notebook side (docs/notebook-env.md)."""
        home_claim, home_mount = self.home_volume()
        return NotebookEnv(
            backend="kubernetes", user=user.name, groups=tuple(sorted(user.groups)), team=team,
            namespace=self.namespace,
            service_account=self.notebook_service_account if self.manage_namespace_objects
            else (self.service_account or None),
            profile=choice.profile.slug, image=choice.image, gpu_type=choice.gpu_type,
            gpus=choice.gpus,
            datasets=tuple(
                NotebookDataset.of(
                    m.dataset, mount_path=m.mount_path, read_only=m.read_only, sub_path=m.sub_path,
                    source=objects.expand_source(m.dataset.source, username=user.name)
                    .model_dump(mode="json", exclude_none=True),
                )
                for m in choice.datasets
            ),
            home_claim=home_claim, home_mount=home_mount, config_path=config_path,
        )

    # -- the namespace and its objects ----------------------------------------------------------

    #: what _ensure_namespace last ensured, to skip even building the objects
    _ensured_shapes: ClassVar[dict[Any, KubelabConfig]] = {}

    def namespace_objects(self, config: KubelabConfig, user: UserInfo) -> list[dict[str, Any]]:
        """What kubelab keeps in the user's namespace (:func:`~kubelab.spawner.provision.namespace_objects`)."""
        return namespace_objects(
            config, user, namespace=self.namespace, service_account=self.notebook_service_account,
            unusable_datasets=self.unusable_datasets(config),
            policy_params=lambda view: self.policy_params(view, user))

    @property
    def api_retry(self) -> RetryPolicy:
        """The retry policy of the spawner's own API writes, from KubeSpawner's settings: each
        request may take ``k8s_api_request_timeout`` s, retried for ``k8s_api_request_retry_timeout``."""
        return RetryPolicy(deadline=self.k8s_api_request_retry_timeout, first_delay=0.1,
                           max_delay=5.0, request_timeout=self.k8s_api_request_timeout)

    def provisioner(self) -> Provisioner:
        from kubespawner.clients import shared_client

        return Provisioner(self.api, shared_client("RbacAuthorizationV1Api"), policy=self.api_retry,
                           log=self.log, log_name=self._log_name)

    def policy_params(self, config: KubelabConfig, user: UserInfo) -> dict[str, Any]:
        """The ``kubelab-policy`` ConfigMap: what the admission policy (docs/security.md) lets
        pods in this namespace mount and run — the user's datasets and images, their home
        claims, and what the admin's own KubeSpawner settings add to notebook pods. *config*
        may be the admin's or the user's view of it: the params are the same."""
        homes = {self.pvc_name}
        for other in (getattr(self.user, "spawners", None) or {}).values():  # named servers
            if isinstance(getattr(other, "pvc_name", None), str):
                homes.add(other.pvc_name)
        home_claim, _ = self.home_volume()
        extra_volumes = [
            v for v in self._expand_all(list(self._sorted_dict_values(self._kubelab_pristine["volumes"]
                                                                        if self._kubelab_pristine else self.volumes)))
            if (v.get("persistentVolumeClaim") or {}).get("claimName") not in homes
        ]
        containers = (*self._sorted_dict_values(self.init_containers), *self._sorted_dict_values(self.extra_containers))
        extra_images = [c["image"] for c in containers
                        if isinstance(c, Mapping) and c.get("image")]
        return admission.policy_params(
            config, username=user.name, groups=sorted(user.groups),
            home_claim=sorted(homes) if home_claim else None, namespace=self.namespace,
            extra_images=extra_images, extra_volumes=extra_volumes,
        )

    async def _ensure_namespace(self) -> None:
        config = self.kubelab
        user = self.user_info()
        # what shapes the objects: the config, the user, their groups, the namespace, the cluster
        shape = (self.api.api_client.configuration.host, self.namespace, id(config), user,
                 self.manage_namespace_objects, self.notebook_service_account)
        if self._ensured_shapes.get(shape) is config:
            return
        ns = objects.make_namespace(
            self.namespace, pod_security=config.pod_security,
            **objects.namespace_owner(config, username=user.name, groups=sorted(user.groups)),
        )
        wanted = [ns, *(self.namespace_objects(config, user) if self.manage_namespace_objects else [])]
        await self.provisioner().ensure(wanted)
        self._ensured_shapes[shape] = config

    def forget_namespace(self) -> None:
        """Make the next spawn re-check this namespace's objects."""
        for shape in [k for k in self._ensured_shapes if k[1] == self.namespace]:
            self._ensured_shapes.pop(shape, None)
        Provisioner.forget("/" + self.namespace)

    # -- the pod: checked against the Pod Security level before it is sent ---------------------

    async def get_pod_manifest(self) -> Any:
        """KubeSpawner's pod, refused (HTTP 500, with every reason) when it breaks the Pod
        Security level of ``kubelab.yaml``: something the hub admin added outside kubelab (an
        init container, ``extra_pod_config``, a Helm chart default) would otherwise be refused
        by the namespace's admission with a terse message, or, in a namespace made without
        kubelab's labels, run below the level."""
        pod = await super().get_pod_manifest()
        level = self.kubelab.pod_security.level
        found = violations(self.api.api_client.sanitize_for_serialization(pod), level)
        if found:
            self.log.error("Pod of %s breaks Pod Security %r: %s", self._log_name, level, "; ".join(found))
            raise spawn_error(
                f"The notebook pod would break the {level!r} Pod Security standard the admin "
                f"config asks for: {'; '.join(found)}. This comes from the hub's settings, not your "
                "choices: please tell your hub admin (docs/spawner.md, Pod Security).",
                reason="pod-security", status=500,
            )
        return pod

    # -- starting, failing fast on unschedulable GPU pods --------------------------------------

    async def _start(self) -> Any:
        self._kubelab_failure = None
        main = asyncio.ensure_future(super()._start())
        watchdog = asyncio.ensure_future(self._watch_gpu_scheduling(main))
        try:
            return await main
        except asyncio.CancelledError:
            self._release_gpus()
            if self._kubelab_failure is not None:
                raise self._kubelab_failure from None
            raise
        except BaseException as e:
            # keep namespace/pod name: JupyterHub's cleanup (stop) still needs them
            self._release_gpus()
            self.restore_traits()
            if isinstance(e, ApiException) and e.status == 404:
                # the namespace was deleted behind our back: re-ensure it next time
                self.forget_namespace()
            raise
        finally:
            watchdog.cancel()

    def _unschedulable(self, pod: Mapping[str, Any]) -> str | None:
        """The scheduler's message if *pod* is Pending and unschedulable, else None."""
        status = pod.get("status") or {}
        if status.get("phase") not in (None, "Pending") or (pod.get("spec") or {}).get("nodeName"):
            return None
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                return c.get("message") or "unschedulable"
        for event in reversed(self.events):
            if event.get("reason") == "FailedScheduling":
                return event.get("message") or "unschedulable"
        return None

    async def _watch_gpu_scheduling(self, main: asyncio.Future[Any]) -> None:
        """Cancel *main* and delete the pod when a GPU pod stays unschedulable too long."""
        timeout = self.gpu_unschedulable_timeout
        if timeout <= 0:
            return
        first_seen: float | None = None
        tick = min(0.25, timeout / 4)
        while not main.done():
            await asyncio.sleep(tick)
            choice = self._kubelab_choice
            if choice is None or not choice.gpus or self.pod_reflector is None:
                continue
            pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}")
            if pod is None:
                continue
            if first_seen is None:
                first_seen = time.monotonic()
            reason = self._unschedulable(pod)
            if reason is None or time.monotonic() - first_seen < timeout:
                continue
            message = await self.gpu_failure_message(choice, reason)
            self.log.warning("Giving up on %s: %s", self._log_name, reason)
            # delete the pod before cancelling the start: cancelling first would cancel this
            # task too (the start's clean-up stops the watchdog)
            try:
                await self.stop(now=True)
            except Exception:
                self.log.exception("Could not delete the unschedulable pod of %s", self._log_name)
            self.restore_traits()
            self._kubelab_failure = spawn_error(message, reason="gpu-unschedulable", status=503)
            main.cancel()
            return

    async def gpu_failure_message(self, choice: Choice, reason: str) -> str:
        gpu_name = choice.gpu.display_name if choice.gpu else (choice.gpu_type or "GPU")
        availability = await self.availability(wait=0)
        a = availability.gpu(choice.gpu_type or "")
        if a is None:
            figures = "how many are free is not known"
        elif a.total == 0:
            figures = f"the cluster has no {gpu_name} now"
        else:
            figures = f"{a.free} of {a.total} free, at most {a.largest_free} on one node"
        tips = []
        if a is not None and a.largest_free and a.largest_free < choice.gpus:
            tips.append(f"ask for {a.largest_free} GPU{'s' if a.largest_free > 1 else ''}")
        elif choice.profile.gpu and min(choice.profile.gpu.counts) < choice.gpus:
            tips.append("ask for fewer GPUs")
        for p in profiles.allowed_profiles(self.kubelab, self.user_info()):
            if p.gpu and p.gpu.type != choice.gpu_type:
                other = availability.gpu(p.gpu.type)
                if other is not None and other.fits(min(p.gpu.counts)):
                    tips.append(f"choose {p.display_name} ({other.free} free)")
        tips.append("try again later")
        return (
            f"No node could take {choice.gpus} × {gpu_name} within {self.gpu_unschedulable_timeout:g} s "
            f"({figures}). Try to: {'; '.join(tips)}. The waiting server was removed. "
            f"Scheduler: {reason}"
        )

    # -- state --------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._kubelab_choice is not None:
            state["kubelab_choice"] = self._kubelab_choice.user_options()
        return state


async def _profile_list(spawner: ProfileSpawner) -> list[dict[str, Any]]:
    return profiles.kubespawner_profile_list(spawner.kubelab, spawner.user_info())


async def _options_form(spawner: ProfileSpawner) -> str:
    availability = await spawner.availability()
    return profiles.render_form(
        spawner.kubelab, spawner.user_info(), availability,
        user_options=spawner.user_options or None,
        refuse_unavailable=spawner.refuse_unavailable_gpus,
    )


__all__ = ["ProfileSpawner"]

"""Pure builders of a training job's Kubernetes objects (no API calls; tests compare dicts).

- one node: a ``batch/v1`` Job;
- several nodes: an *indexed* Job (one pod per node, ``JOB_COMPLETION_INDEX`` = node rank) plus a
  headless Service so that every pod finds rank 0 at ``<job>-0.<job>.<namespace>.svc``: the
  ``torchrun`` rendezvous;
- when the cluster runs Kubeflow: a ``TrainJob`` (trainer.kubeflow.org) or a ``PyTorchJob``
  (kubeflow.org), whose operators do the rendezvous wiring themselves.

Labels, volumes and the security context come from :mod:`kubelab.core.objects` (shared with the
notebook spawner), so a job pod looks like the notebook pod it came from.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubelab.core import objects
from kubelab.core.config import Dataset, GpuType, PodSecurity
from kubelab.core.jobs import pack, torchrun

__all__ = ["JobObjects", "JOB_LABEL", "SPEC_ANNOTATION", "SUBMISSION_ANNOTATION",
           "CANCELLED_ANNOTATION", "CONTAINER", "MASTER_PORT", "RUNNER", "TORCHRUN_RUNNER",
           "build", "pod_shell"]

JOB_LABEL = "kubelab.dev/job"
SPEC_ANNOTATION = "kubelab.dev/job-spec"
SUBMISSION_ANNOTATION = "kubelab.dev/submission"
CANCELLED_ANNOTATION = "kubelab.dev/cancelled"
CONTAINER = "train"
MASTER_PORT = 29500
HOME_VOLUME = "kubelab-home"
WORKSPACE_VOLUME = "kubelab-workspace"
INIT_CONTAINER = "workspace"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

#: The job's runner: the command's output goes to the container's log (the pod log API) and is
#: appended to ``$KUBELAB_LOG_DIR/rank-<node rank>.txt`` on the user's volume, so the log outlives
#: the pod (the Job's TTL, node loss). A FIFO and ``tee`` rather than a pipe, because POSIX sh has
#: no pipefail: the exit code is the command's. SIGTERM (cancel, the deadline) is passed on to the
#: command: the shell is PID 1, which the kernel shields from signals it does not handle; the
#: trap is the shell's first command, and a signal that came before the command's pid was known
#: is passed on once it is. No ``$$`` (Kubernetes would turn it into ``$``) and no ``$(`` (a
#: Kubernetes variable reference). Built from the pieces below; :data:`TORCHRUN_RUNNER` adds to it.
_TRAP = """\
pid= stop=
trap 'stop=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null' TERM INT
"""
_TEE_OPEN = """\
log="$KUBELAB_LOG_DIR/rank-${NODE_RANK:-${PET_NODE_RANK:-0}}.txt"
fifo=/dev/shm/.kubelab-log
if ! mkdir -p "$KUBELAB_LOG_DIR" || ! : >> "$log" || ! mkfifo "$fifo"; then
  echo "kubelab: cannot keep a copy of the log in $KUBELAB_LOG_DIR" >&2
  exec "$@"
fi
"""
_TEE_RUN = """\
tee -a "$log" < "$fifo" &
tee_pid=$!
"$@" > "$fifo" 2>&1 &
pid=$!
[ -z "$stop" ] || kill -TERM "$pid" 2>/dev/null
while :; do
  wait "$pid"
  code=$?
  kill -0 "$pid" 2>/dev/null || break
done
# a wait the trap interrupted answers 128+15 although the job may have ended right after with
# its own code: ask once more (dash and bash answer a collected job's status again; 127 if not)
wait "$pid" 2>/dev/null
last=$?
[ "$last" -eq 127 ] || code=$last
wait "$tee_pid"
rm -f "$fifo"
"""
_EXIT = 'exit "$code"\n'
RUNNER = _TRAP + _TEE_OPEN + _TEE_RUN + _EXIT

#: A torchrun command's runner, before the command: :mod:`kubelab.core.jobs.torchrun`'s source
#: (the helper). Its workers get ``PYTHON_EXEC``: a launcher in the pod's ``/dev/shm`` that runs
#: them line-buffered (their lines whole in the log), written by the helper run with torchrun's
#: own interpreter: the one its ``#!`` line names (``#!/usr/bin/env NAME``: NAME on ``PATH``),
#: which is what torchrun's ``sys.executable`` is, so the workers run as they would without the
#: launcher (same venv or conda env); where that line names no Python (a ``#!/bin/sh`` wrapper,
#: a binary), ``python3``, else ``python``, on ``PATH``. Why ``/dev/shm``: the pod's own
#: memory-backed ``emptyDir`` that kubelab always mounts (the runner's FIFO is there too), so it
#: is writable by the pod's non-root user and, unlike a container runtime's default ``/dev/shm``,
#: not ``noexec``, whatever the image's ``/tmp`` is; and not the workspace, which is the user's.
#: A ``PYTHON_EXEC`` of the user's own is kept. After a failed torchrun (not one the pod was told
#: to stop) the helper appends the summary of the failure (the failing rank and its error) to
#: the container's log and the log's copy, reading this run's part of the copy.
_TORCHRUN_SETUP = """\
helper=$1
shift
py=
if torchrun=`command -v "$1"` && read -r line < "$torchrun"; then
  case $line in
    '#!'*/env' '*) py=`command -v "${line##* }"` ;;
    '#!/'*) py=${line#??}; py=${py%% *} ;;
  esac
fi
case $py in */python*) [ -x "$py" ] || py= ;; *) py= ;; esac
[ -n "$py" ] || py=`command -v python3 || command -v python`
launcher=/dev/shm/.kubelab-python
if [ -n "$PYTHON_EXEC" ]; then
  :
elif [ -n "$py" ] && "$py" -I -c "$helper" launcher "$launcher"; then
  export PYTHON_EXEC="$launcher"
else
  echo "kubelab: no line-buffered launcher for torchrun's workers (no Python found)" >&2
fi
"""
_TORCHRUN_START = """\
start=`wc -c 2>/dev/null < "$log"`
"""
_TORCHRUN_SUMMARY = """\
if [ "$code" -ne 0 ] && [ -z "$stop" ] && [ -n "$py" ]; then
  "$py" -I -c "$helper" summary "$log" "$start" | tee -a "$log"
fi
"""
TORCHRUN_RUNNER = (_TRAP + _TORCHRUN_SETUP + _TEE_OPEN + _TORCHRUN_START + _TEE_RUN
                   + _TORCHRUN_SUMMARY + _EXIT)
#: a torchrun command's shell without a copy of the log: the launcher only
TORCHRUN_EXEC = _TRAP + _TORCHRUN_SETUP + 'exec "$@"\n'


def pod_shell(command: Sequence[str], *, tee: bool) -> list[str]:
    """*command* as the container runs it: under :data:`RUNNER` with *tee* (a copy of the log),
    and a torchrun command under :data:`TORCHRUN_RUNNER` (or :data:`TORCHRUN_EXEC`), the helper's
    source before it; else as it is. What the shell runs is ``"$@"``, readable in the pod spec
    after the helper."""
    if command[:1] == ["torchrun"]:
        script = TORCHRUN_RUNNER if tee else TORCHRUN_EXEC
        return ["sh", "-c", script, "kubelab-job", torchrun.helper_source(), *command]
    return ["sh", "-c", RUNNER, "kubelab-job", *command] if tee else list(command)


def unpack_command(store: str, snapshot_id: str, workdir: str) -> list[str]:
    """What materialises the workspace in a job pod: :mod:`kubelab.core.jobs.pack`'s own source,
    so any image with a Python runs it, kubelab installed or not."""
    return ["python", "-I", "-c", inspect.getsource(pack), store, snapshot_id, workdir]


@dataclass(frozen=True)
class JobObjects:
    """What to create for one job: the main object, and the headless Service if any."""

    kind: str  #: "Job", "TrainJob" or "PyTorchJob"
    main: dict[str, Any]
    service: dict[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _toleration(t: Any) -> dict[str, Any]:
    out = {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect,
           "tolerationSeconds": t.toleration_seconds}
    return {k: v for k, v in out.items() if v is not None}


def _resources(*, cpus: str | None, memory: str | None, gpus: int,
               gpu_resource: str) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpus:
        requests["cpu"] = limits["cpu"] = str(cpus)
    if memory:
        # Why requests = limits for memory: a training job that is OOM-killed on a busy node
        # after hours is worse than one that waits for a node with room.
        requests["memory"] = limits["memory"] = str(memory)
    if gpus:
        limits[gpu_resource] = str(gpus)  # extended resources: the request defaults to the limit
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def build(*, name: str, namespace: str, user: str, image: str, entry: str, args: Sequence[str],
          workdir: str, gpus: int, nodes: int, cpus: str | None, memory: str | None,
          env: Mapping[str, str], datasets: Sequence[Dataset], gpu_type: GpuType | None,
          pod_security: PodSecurity, home_claim: str | None, home_mount: str,
          ttl_seconds_after_finished: int | None, active_deadline_seconds: int | None,
          service_account: str | None, submission: str, summary: Mapping[str, Any],
          kind: str = "Job", snapshot_store: str | None = None, snapshot_id: str | None = None,
          log_dir: str | None = None, team: str | None = None,
          trainer_runtime: str = "kubelab-torch") -> JobObjects:
    """The objects of one job; *summary* is stored in an annotation so that a restarted kernel
    shows what was asked without any state of its own.

    With *snapshot_store* and *snapshot_id*, the pod materialises the workspace itself: an init
    container (inline for a ``TrainJob``) unpacks the snapshot from the store on the home volume
    into an ``emptyDir`` mounted at *workdir*, on the node's own disk; each pod of a multi-node
    job gets its own copy. With *log_dir*, the runner keeps a copy of each node's output there.

    *datasets* may come from the admin's full config: ``{username}`` in a sub path or a claim
    name is expanded for *user* (:func:`kubelab.core.objects.dataset_for_user`), as in the
    notebook's pod. *team* labels the objects and their pods as the notebook's are
    (``kubelab.dev/team``), so the hub's team usage counts the job's GPUs."""
    lbls = objects.labels(user=user, team=team, kind="job", extra={JOB_LABEL: name})
    annotations = {
        SPEC_ANNOTATION: json.dumps(dict(summary), sort_keys=True, separators=(",", ":")),
        SUBMISSION_ANNOTATION: submission,
        objects.USER_ANNOTATION: user,
    }
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if home_claim:
        # Why the home volume: the workspace snapshot, the outputs and the metrics file live on
        # it, at the same path as in the notebook, so the notebook reads them as they are written.
        volumes.append({"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": home_claim}})
        mounts.append({"name": HOME_VOLUME, "mountPath": home_mount})
    shm, shm_mount = objects.shm_volume(None)
    volumes.append(shm)
    mounts.append(shm_mount)
    unpack = None
    if snapshot_store and snapshot_id:
        # Why an emptyDir at the workspace's path (inside the home mount): the job's paths (and
        # tracebacks) are the ones the user sees in the notebook, while the files are the pod's
        # own copy, written once per pod on its node's disk rather than over the shared volume.
        volumes.append({"name": WORKSPACE_VOLUME, "emptyDir": {}})
        mounts.append({"name": WORKSPACE_VOLUME, "mountPath": workdir})
        unpack = unpack_command(snapshot_store, snapshot_id, workdir)
    for d in datasets:
        # {username} in the sub path and claim name expanded exactly as in the notebook's pod
        volume, mount = objects.dataset_volume(objects.dataset_for_user(d, username=user))
        volumes.append(volume)
        mounts.append(mount)
    pod_sc, container_sc = objects.restricted_security_context(pod_security)
    gpu_resource = gpu_type.resource if gpu_type else "nvidia.com/gpu"
    resources = _resources(cpus=cpus, memory=memory, gpus=gpus, gpu_resource=gpu_resource)
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    per_node = max(gpus, 1)

    if log_dir:
        env_list.append({"name": "KUBELAB_LOG_DIR", "value": log_dir})

    if kind == "TrainJob":
        return _train_job(name, namespace, lbls, annotations, image, entry, args, nodes, per_node,
                          resources, env_list, volumes, mounts, workdir, gpu_type, pod_sc,
                          container_sc, service_account, ttl_seconds_after_finished,
                          unpack=unpack, tee=bool(log_dir), runtime=trainer_runtime)

    if kind == "PyTorchJob":
        command = ["torchrun", f"--nproc-per-node={per_node}", entry, *args]
    elif nodes > 1:
        # Kubernetes expands $(VAR) from the container's env: each pod gets its own NODE_RANK.
        command = ["torchrun", "--nnodes=$(NNODES)", f"--nproc-per-node={per_node}",
                   "--node-rank=$(NODE_RANK)", "--master-addr=$(MASTER_ADDR)",
                   "--master-port=$(MASTER_PORT)", entry, *args]
        env_list += [
            {"name": "NNODES", "value": str(nodes)},
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}},
            {"name": "MASTER_ADDR", "value": f"{name}-0.{name}.{namespace}.svc"},
            {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        ]
    elif gpus > 1:
        command = ["torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", entry, *args]
    else:
        command = ["python", "-u", entry, *args]

    command = pod_shell(command, tee=bool(log_dir))
    container: dict[str, Any] = {
        "name": "pytorch" if kind == "PyTorchJob" else CONTAINER,
        "image": image, "command": command, "workingDir": workdir, "env": env_list,
        "volumeMounts": mounts, "securityContext": container_sc,
    }
    if resources:
        container["resources"] = resources
    if nodes > 1 and kind == "Job":
        container["ports"] = [{"name": "rendezvous", "containerPort": MASTER_PORT}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "securityContext": pod_sc, "containers": [container],
        "volumes": volumes,
        # Why no token: training code has no business calling the Kubernetes API as the user.
        "automountServiceAccountToken": False,
    }
    if unpack is not None:
        init: dict[str, Any] = {
            "name": INIT_CONTAINER, "image": image, "command": unpack,
            "volumeMounts": [m if m["name"] != HOME_VOLUME else dict(m, readOnly=True)
                             for m in mounts if m["name"] in (HOME_VOLUME, WORKSPACE_VOLUME)],
            "securityContext": container_sc,
        }
        # Same CPU and memory as the job (an init container's requests do not add to the pod's,
        # and a namespace quota that wants limits on every container is satisfied); no GPU.
        init_resources = _resources(cpus=cpus, memory=memory, gpus=0, gpu_resource=gpu_resource)
        if init_resources:
            init["resources"] = init_resources
        pod_spec["initContainers"] = [init]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if gpu_type is not None and gpus:
        if gpu_type.node_selector:
            pod_spec["nodeSelector"] = dict(gpu_type.node_selector)
        if gpu_type.tolerations:
            pod_spec["tolerations"] = [_toleration(t) for t in gpu_type.tolerations]
    template = {"metadata": {"labels": dict(lbls), "annotations": {objects.USER_ANNOTATION: user}},
                "spec": pod_spec}

    if kind == "PyTorchJob":
        replicas: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "Never",
                                               "template": template}}
        if nodes > 1:
            replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never",
                                  "template": template}
        run_policy: dict[str, Any] = {"cleanPodPolicy": "None"}
        if ttl_seconds_after_finished is not None:
            run_policy["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
        if active_deadline_seconds is not None:
            run_policy["activeDeadlineSeconds"] = active_deadline_seconds
        main = _meta("kubeflow.org/v1", "PyTorchJob", name, namespace, lbls, annotations)
        main["spec"] = {"pytorchReplicaSpecs": replicas, "runPolicy": run_policy,
                        "nprocPerNode": str(per_node)}
        return JobObjects("PyTorchJob", main)

    spec: dict[str, Any] = {
        # Why no retries: a failed training run is reported, not silently re-run from scratch
        # (which would overwrite its outputs and double its GPU bill).
        "backoffLimit": 0,
        "completions": nodes, "parallelism": nodes, "template": template,
    }
    if ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    service = None
    if nodes > 1:
        spec["completionMode"] = "Indexed"
        pod_spec["subdomain"] = name  # pod DNS: <job>-<index>.<service>.<namespace>.svc
        service = _meta("v1", "Service", name, namespace, lbls, {objects.USER_ANNOTATION: user})
        service["spec"] = {
            "clusterIP": "None",
            # Why: rank 0 must be resolvable before it is Ready, or the rendezvous never starts.
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: name, objects.USER_LABEL: lbls[objects.USER_LABEL]},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        }
    main = _meta("batch/v1", "Job", name, namespace, lbls, annotations)
    main["spec"] = spec
    return JobObjects("Job", main, service)


def _meta(api_version: str, kind: str, name: str, namespace: str, lbls: Mapping[str, str],
          annotations: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": dict(lbls),
                         "annotations": dict(annotations)}}


def _train_job(name: str, namespace: str, lbls: Mapping[str, str], annotations: Mapping[str, str],
               image: str, entry: str, args: Sequence[str], nodes: int, per_node: int,
               resources: Mapping[str, Any], env_list: list[dict[str, Any]],
               volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], workdir: str,
               gpu_type: GpuType | None, pod_sc: Mapping[str, Any],
               container_sc: Mapping[str, Any], service_account: str | None,
               ttl: int | None, *, unpack: list[str] | None = None,
               tee: bool = False, runtime: str = "kubelab-torch") -> JobObjects:
    """A Kubeflow Trainer v2 ``TrainJob`` on the *runtime* ClusterTrainingRuntime (``jobs.
    trainer_runtime``; kubelab's ``hub_config/trainer-runtime.yaml``, a ``torch-distributed``
    whose pods meet "restricted"): the runtime runs ``torchrun`` with the rendezvous set up, so
    the command is the script. A TrainJob has no TTL of its own: the runtime's JobSet carries it."""
    # The runtime sets PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR... which torchrun reads; the
    # shell unpacks the workspace (podSpecOverrides cannot add an init container) and moves into
    # it (a TrainJob has no workingDir of its own).
    # The runner and the helper are those of a Job's torchrun command (pod_shell).
    script = 'cd "$0" || exit 1\n'
    pre: list[str] = []
    if unpack is not None:
        script = '"$1" "$2" "$3" "$4" "$5" "$6" "$0" || exit 1\nshift 6\n' + script
        pre = unpack[:-1]  # python -I -c SOURCE STORE ID; the workspace is $0
    _sh, _c, runner, _name, *run = pod_shell(["torchrun", entry, *args], tee=tee)
    trainer: dict[str, Any] = {
        "image": image,
        "command": ["sh", "-c", script + runner, workdir, *pre, *run],
        "numNodes": nodes, "numProcPerNode": per_node, "env": env_list,
    }
    if resources:
        trainer["resourcesPerNode"] = dict(resources)
    # Why the security context and the token here although Trainer v2.0's podSpecOverrides
    # schema has no such fields (an API server prunes them): the runtime's pod template must
    # carry them there (docs/jobs.md), and an operator whose overrides take them gets them
    # from the job itself. The same as a plain Job's pod, field for field.
    pod_override: dict[str, Any] = {
        "targetJobs": [{"name": "node"}], "volumes": volumes,
        "containers": [{"name": "node", "volumeMounts": mounts,
                        "securityContext": dict(container_sc)}],
        "securityContext": dict(pod_sc),
        "automountServiceAccountToken": False,
    }
    if service_account:
        pod_override["serviceAccountName"] = service_account
    if gpu_type is not None:
        if gpu_type.node_selector:
            pod_override["nodeSelector"] = dict(gpu_type.node_selector)
        if gpu_type.tolerations:
            pod_override["tolerations"] = [_toleration(t) for t in gpu_type.tolerations]
    main = _meta("trainer.kubeflow.org/v1alpha1", "TrainJob", name, namespace, lbls, annotations)
    main["spec"] = {
        "runtimeRef": {"name": runtime},
        "trainer": trainer,
        "podSpecOverrides": [pod_override],
        "labels": dict(lbls),
        "annotations": {objects.USER_ANNOTATION: annotations[objects.USER_ANNOTATION]},
    }
    return JobObjects("TrainJob", main, extra={"workdir": workdir, "container_sc": container_sc})

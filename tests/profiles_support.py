"""The admin config, users and tampered spawn options the spawner tests share.

``CONFIG_YAML`` is the config every spawner test runs with; ``TAMPERED`` lists spawn options ALICE
must be refused, each with a reason: the pure tests (tests/test_spawner_profiles.py) and the
Kubernetes spawner tests (tests/test_spawner_kubernetes.py) check the same cases.
"""

from __future__ import annotations

from typing import Any

from kubelab.core.config import parse_config
from kubelab.spawner import profiles as P

CONFIG_YAML = r"""
version: 1
groups:
  ml: {description: ML}
  vision: {description: Vision}
  solo: {description: no team}
gpu_types:
  a100:
    display_name: NVIDIA A100 <80GB> & "friends"
    node_selector: {nvidia.com/gpu.product: A100}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    max_per_node: 8
  t4:
    display_name: NVIDIA T4
    node_selector: {nvidia.com/gpu.product: T4}
    max_per_node: 4
profiles:
  - slug: cpu
    display_name: CPU <script>alert(1)</script>
    description: Small & cheap {{ 7*7 }}
    default: true
    cpu: {guarantee: 0.5, limit: 2}
    memory: {guarantee: 1Gi, limit: 2Gi}
    images:
      - {slug: scipy, display_name: SciPy, image: "ghcr.io/kubelab/notebook:1", default: true}
      - {slug: torch, display_name: Torch, image: "ghcr.io/kubelab/notebook-pytorch:1"}
    shm_size: 256Mi
  - slug: a100
    display_name: A100
    cpu: {guarantee: 4, limit: 8}
    memory: {guarantee: 8Gi, limit: 16Gi}
    gpu: {type: a100, counts: [1, 2, 4, 8], default: 1}
    images:
      - {slug: cuda, display_name: CUDA, image: "ghcr.io/kubelab/notebook-cuda:1"}
    custom_image: {allowed: true, pattern: '^ghcr\.io/kubelab/[a-z0-9-]+:[A-Za-z0-9._-]+$'}
    shm_size: 2Gi
    groups: [ml]
  - slug: t4
    display_name: T4
    gpu: {type: t4, counts: [1, 2], default: 1}
    images:
      - {slug: cuda, display_name: CUDA, image: "ghcr.io/kubelab/notebook-cuda:1"}
    groups: [vision]
datasets:
  - name: imagenet
    description: ImageNet <b>1k</b>
    source: {pvc: {claim_name: imagenet}}
    read_only: true
    mount_path: /data/imagenet
    default: true
    groups: [ml]
  - name: coco
    source: {nfs: {server: nfs.example, path: /exports/coco}}
    mount_path: /data/coco
    groups: [vision]
  - name: scratch
    source: {pvc: {claim_name: scratch}}
    read_only: false
    mount_path: /scratch
    sub_path: users/{username}
  - name: local
    source: {host_path: {path: /srv/local}}
    mount_path: /data/local
    groups: [ml]
teams:
  ml:
    namespace: kubelab-ml-{username}
    quota: {gpus: 4, cpu: 64, memory: 256Gi}
    user_quota: {gpus: 2}
  vision:
    namespace: kubelab-vision
    quota: {gpus: 2}
home:
  size: 1Gi
  mount_path: /home/jovyan
"""

CONFIG = parse_config(CONFIG_YAML, "test.yaml")
ALICE = P.UserInfo.of("alice", ["ml"])  # ml: cpu + a100; imagenet, scratch, local
VICTOR = P.UserInfo.of("victor", ["vision"])  # vision: cpu + t4; coco, scratch
NOBODY = P.UserInfo.of("nobody", [])  # cpu only; scratch

#: (name, user_options) that ALICE must be refused, each with a reason; reused end to end.
TAMPERED: list[tuple[str, Any]] = [
    ("not a dict", ["profile", "a100"]),
    ("unknown key", {"profile": "cpu", "cpu_limit": 64}),
    ("kubespawner override key", {"profile": "cpu", "kubespawner_override": {"privileged": True}}),
    ("misspelt gpus", {"profile": "a100", "gpu": 2}),
    ("unknown profile", {"profile": "does-not-exist"}),
    ("other group's profile", {"profile": "t4"}),
    ("profile wrong type", {"profile": 3}),
    ("profile null", {"profile": None}),
    ("profile list", {"profile": ["a100"]}),
    ("image not offered", {"profile": "cpu", "image": "cuda"}),
    ("image raw reference", {"profile": "cpu", "image": "ghcr.io/kubelab/notebook:1"}),
    ("image and custom both", {"profile": "a100", "image": "cuda", "image--unlisted-choice": "ghcr.io/kubelab/x:1"}),
    ("custom image not allowed", {"profile": "cpu", "image--unlisted-choice": "ghcr.io/kubelab/notebook:2"}),
    ("custom image other registry", {"profile": "a100", "image--unlisted-choice": "docker.io/evil/miner:1"}),
    ("custom image prefix match only", {"profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/x:1 evil"}),
    ("custom image trailing newline", {"profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/x:1\n"}),
    ("custom image embedded newline", {"profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/x:1\nevil.io/y:2"}),
    ("custom image suffix", {"profile": "a100", "image--unlisted-choice": "evil.io/ghcr.io/kubelab/x:1"}),
    ("custom image wrong type", {"profile": "a100", "image--unlisted-choice": {"image": "x"}}),
    ("gpus not offered", {"profile": "a100", "gpus": 3}),
    ("gpus on cpu profile", {"profile": "cpu", "gpus": 1}),
    ("gpus negative", {"profile": "a100", "gpus": -1}),
    ("gpus float", {"profile": "a100", "gpus": 1.5}),
    ("gpus bool", {"profile": "a100", "gpus": True}),
    ("gpus text", {"profile": "a100", "gpus": "two"}),
    ("gpus over user quota", {"profile": "a100", "gpus": 4}),
    ("gpus over team quota", {"profile": "a100", "gpus": 8}),
    ("datasets not a list", {"profile": "cpu", "datasets": "imagenet"}),
    ("dataset not granted", {"profile": "cpu", "datasets": ["coco"]}),
    ("dataset unknown", {"profile": "cpu", "datasets": ["secret"]}),
    ("dataset wrong type", {"profile": "cpu", "datasets": [42]}),
    ("dataset entry unknown key", {"profile": "cpu", "datasets": [{"name": "scratch", "claim_name": "claim-bob"}]}),
    ("dataset entry no name", {"profile": "cpu", "datasets": [{"sub_path": "x"}]}),
    ("sub_path escapes with ..", {"profile": "cpu", "datasets": [{"name": "scratch", "sub_path": "../bob"}]}),
    ("sub_path escapes nested ..", {"profile": "cpu", "datasets": [{"name": "scratch", "sub_path": "a/../../bob"}]}),
    ("sub_path absolute", {"profile": "cpu", "datasets": [{"name": "scratch", "sub_path": "/etc"}]}),
    ("sub_path newline", {"profile": "cpu", "datasets": [{"name": "scratch", "sub_path": "a\nb"}]}),
    ("mount_path relative", {"profile": "cpu", "datasets": [{"name": "scratch", "mount_path": "scratch"}]}),
    ("mount_path escapes", {"profile": "cpu", "datasets": [{"name": "scratch", "mount_path": "/data/../etc"}]}),
    ("mount_path over home", {"profile": "cpu", "datasets": [{"name": "scratch", "mount_path": "/home/jovyan"}]}),
    ("mount_path over shm", {"profile": "cpu", "datasets": [{"name": "scratch", "mount_path": "/dev/shm"}]}),
    ("mount_path root", {"profile": "cpu", "datasets": [{"name": "scratch", "mount_path": "/"}]}),
    ("two datasets at one path", {"profile": "cpu", "datasets": ["imagenet", {"name": "scratch", "mount_path": "/data/imagenet"}]}),
    ("read-only made writable", {"profile": "cpu", "datasets": [{"name": "imagenet", "read_only": False}]}),
    ("read_only wrong type", {"profile": "cpu", "datasets": [{"name": "scratch", "read_only": "yes"}]}),
    ("another user's volume by name", {"profile": "cpu", "datasets": ["claim-bob"]}),
    ("another user's home", {"profile": "cpu", "pvc_name": "claim-bob"}),
    ("volumes injection", {"profile": "cpu", "volumes": [{"name": "x", "hostPath": {"path": "/"}}]}),
]

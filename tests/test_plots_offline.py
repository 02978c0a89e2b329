"""The offline page template for `dvc plots show`: built from npm, no CDN, plots render in Node."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maskpipe.evaluation import html_template as ht

FAKE = {
    "vega": "var vega={version:'x'};",
    "vega-lite": "var vegaLite={};/* '</script>' */",
    "vega-embed": "var vegaEmbed=function(){};",
}


def test_template_has_plot_divs_but_no_cdn_scripts_placeholder():
    page = ht.render_template(FAKE)
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page  # where DVC would put its CDN <script src> tags
    assert "<\\/script>" in page and page.count("</script>") == 3
    assert page.index("vega@5.20.2") < page.index("vega-lite@5.2.0") < page.index("vega-embed@6.18.2")
    assert ht.check_offline(page) == []
    assert ht.check_offline('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>')


def test_code_containing_a_placeholder_is_refused():
    with pytest.raises(ht.TemplateBuildError, match="plot_divs"):
        ht.render_template({**FAKE, "vega": "x='{plot_divs}'"})


@pytest.fixture(scope="module")
def template(tmp_path_factory, repo) -> Path:
    """The template `make install` built, else one built now (skips when npm cannot fetch)."""
    built = repo / ht.DEFAULT_OUT
    if built.is_file():
        return built
    try:
        return ht.build(tmp_path_factory.mktemp("tpl") / "plots-template.html", repo, configure=False)
    except ht.TemplateBuildError as exc:
        pytest.skip(f"cannot build the plots template here: {exc}")


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_dvc_plots_show_renders_offline(tmp_path, template):
    repo = tmp_path / "r"
    (repo / "eval").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "eval/roc_with_mask.csv").write_text(
        "fpr,tpr,threshold\n0,0,inf\n0,0.6,0.9\n0.3,0.9,0.5\n1,1,0.1\n"
    )
    (repo / "eval/roc_without_mask.csv").write_text("fpr,tpr,threshold\n0,0,inf\n0.2,0.7,0.6\n1,1,0.2\n")
    (repo / "eval/confusion.csv").write_text("actual,predicted\na,a\na,b\nb,b\nb,b\n")
    (repo / "history.csv").write_text("epoch,train_loss,val_loss\n1,0.9,1.0\n2,0.5,0.7\n")
    (repo / "dvc.yaml").write_text("""plots:
  - ROC:
      template: simple
      x: fpr
      y:
        eval/roc_with_mask.csv: tpr
        eval/roc_without_mask.csv: tpr
  - confusion:
      template: confusion
      x: actual
      y:
        eval/confusion.csv: predicted
  - loss:
      x: epoch
      y:
        history.csv: [train_loss, val_loss]
""")
    local = repo / "tpl.html"
    shutil.copy(template, local)
    assert ht.set_dvc_config(local, repo) == "../tpl.html"  # relative to .dvc/, as DVC resolves it
    assert "html_template = ../tpl.html" in (repo / ".dvc/config.local").read_text()
    subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", "out"], cwd=repo, check=True, capture_output=True
    )
    html = (repo / "out/index.html").read_text()
    assert ht.check_offline(html) == []
    result = ht.render_check(repo / "out/index.html")
    assert result["libraries"] == 3 and result["vega"] == "5.20.2" and result["vegaLite"] == "5.2.0"
    assert [p["id"] for p in result["plots"]] == ["#ROC", "#confusion", "#loss"]
    assert all(p["marks"] > 10 for p in result["plots"])

    # without the template the page needs the CDN, and the Node check says it does not render
    (repo / ".dvc/config.local").unlink()
    subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", "cdn"], cwd=repo, check=True, capture_output=True
    )
    assert ht.check_offline((repo / "cdn/index.html").read_text())
    with pytest.raises(ht.TemplateBuildError, match="do not render"):
        ht.render_check(repo / "cdn/index.html")

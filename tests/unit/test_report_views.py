"""The report's views with hostile text in them (what a guest prints: NUL, ESC, `|`, `<`):
JUnit that parses back, Markdown tables that keep their columns, an HTML page of real
tables and plots with axes, medians, intervals and per-run values on hover; Actions
annotations for regressions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vmtest import compare, config, report

REF = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"
NASTY = "oops\x00 \x1b[31mred\x1b[0m | a|b <script>x</script> & \x7f\ufffe\ud800 `c` *d*"


@pytest.fixture(scope="module")
def exp():
    return config.load(REF)


def _doc(variant: str, scenario: str, value: float, verdict: str = "ok", **extra) -> dict:
    metrics = {"fail_to_migrate_dumps": value, "allocations": 500, "failed_pages": value * 2,
               "alloc_contig_range_failed": value / 10, "distinct_failed_pfns": value / 7,
               "allocations_failed": 0, "alloc_us_median": 1000.0, "drains": 500,
               "drains_per_offline": value, "offline_seconds_total": 1.0,
               "blocks_timed_out": 0}
    return {"schema": "vmtest-run/1", "run_id": f"r-{variant}-{value:g}", "verdict": verdict,
            "identity": {"base": "6.1", "variant": variant, "scenario": scenario},
            "metrics": metrics, "splats": [], "operations": [{"dumps": value}], **extra}


@pytest.fixture(scope="module")
def data(exp):
    # patched regresses cma-stress (lower is better); one crash and one infrastructure
    # failure carry what a console tail can hold
    docs = [_doc("unpatched", "cma-stress", v) for v in (30, 28, 35, 31, 29)]
    docs += [_doc("patched", "cma-stress", v) for v in (400, 380, 420, 390, 410)]
    docs.append(_doc("patched", "cma-stress", 0, verdict="kernel-crash", error=NASTY))
    docs.append(_doc("unpatched", "cma-stress", 1, verdict="infrastructure", error=NASTY))
    return compare.build(exp, docs)


@pytest.mark.fault("a crash's console tail holds NUL, ESC or other characters XML cannot "
                   "hold", verdict="(the run's own)", exit="1",
                   message="(none: junit.xml holds them as \\xNN)",
                   kept="junit.xml that parses; report.md whose tables keep their columns")
def test_junit_parses_whatever_the_guest_printed(data, tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(report.junit(data), encoding="utf-8")
    root = ET.parse(path).getroot()  # raises on NUL, ESC, U+FFFE, a lone surrogate
    texts = [e.text or "" for e in root.iter() if e.tag in ("failure", "error")]
    crash = next(t for t in texts if "oops" in t)
    assert "\\x00" in crash and "\\x1b[31mred" in crash and "<script>" in crash
    assert root.get("failures") != "0" and root.get("errors") == "1"


def test_junit_without_the_fix_would_not_parse(data, tmp_path, monkeypatch):
    # the test above can fail: with the characters left in, the file is not XML
    monkeypatch.setattr(report, "xml_safe", lambda text: text.replace("\ud800", ""))
    path = tmp_path / "junit.xml"
    path.write_text(report.junit(data), encoding="utf-8")
    with pytest.raises(ET.ParseError):
        ET.parse(path)


def test_markdown_tables_keep_their_columns_and_quotes_are_escaped(data):
    md = report.markdown(data)
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c for c in line.replace("\\|", "").split("|")[1:-1]]
            assert len(cells) in (3, 7), line
    crash_line = next(line for line in md.splitlines() if "oops" in line)
    assert "a\\|b" in crash_line and "\\<script>" in crash_line and "\\`c\\`" in crash_line
    assert "\n" not in report.md_escape("two\nlines")


class _Page(HTMLParser):
    """Collects the tags of an HTML page and checks they nest."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.seen if tag == name]


def test_html_has_real_tables_and_plots_with_axes_medians_intervals_and_hover(data):
    page_text = report.html_page(data)
    page = _Page()
    page.feed(page_text)
    page.close()
    assert page.stack == []  # every element closed, in order
    assert "<pre>" not in page_text and "|---|" not in page_text
    assert len(page.tags("table")) >= 1 and len(page.tags("th")) >= 7
    assert not page.tags("script")  # the guest's <script> is text
    svgs = page_text.count("<svg")
    n_metrics = len(data["sections"][0]["comparisons"])
    assert svgs >= n_metrics
    assert page_text.count('class="zero"') >= n_metrics
    assert page_text.count('class="median"') >= 2 * n_metrics - 2  # a metric may lack values
    assert page_text.count('class="ci"') >= 2
    hover = [t for t in page.text if " run r-patched-400: 400" in t]
    assert hover, "each run's value on hover (<title>)"


def test_each_svg_is_well_formed_xml(data):
    page_text = report.html_page(data)
    start = 0
    while (start := page_text.find("<svg", start)) >= 0:
        end = page_text.index("</svg>", start) + len("</svg>")
        svg = ET.fromstring(page_text[start:end])
        ticks = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
        assert len(ticks) >= 4, ticks  # title, labels, tick values
        start = end


@pytest.mark.parametrize("lo,hi", [(0, 1), (0, 420), (-3, 17), (0.001, 0.0042), (5, 5)])
def test_ticks_are_round_and_cover_the_range(lo, hi):
    ticks = report.nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    assert len(ticks) <= 12


def test_regressions_and_crashes_become_actions_annotations(data):
    lines = report.github_annotations(data)
    assert any(line.startswith("::error title=vmtest regression%3A 6.1/cma-stress/")
               for line in lines), lines
    crash = next(line for line in lines if "kernel-crash" in line)
    assert "\n" not in crash and "\x00" not in crash
    assert all(line.count("::") == 2 for line in lines)


def test_no_annotations_without_regressions(exp):
    docs = [_doc(v, "cma-stress", 10 + i) for v in ("unpatched", "patched") for i in range(3)]
    assert report.github_annotations(compare.build(exp, docs)) == []


@pytest.mark.parametrize("value,shown", [
    (41021.0, "41021"), (1505.0, "1505"), (30720.0, "30720"), (1000.0, "1000"),
    (835.0, "835"), (0.333, "0.333"), (15.25, "15.2"), (0.0, "0"),
    (float("inf"), "inf"), (None, "n/a"), (3, "3")])
def test_numbers_from_a_thousand_up_are_whole_not_exponents(value, shown):
    # a table of page-fault counts read "4.1e+04 [4.1e+04, 4.1e+04]" (issue 26's run)
    assert report._fmt(value) == shown

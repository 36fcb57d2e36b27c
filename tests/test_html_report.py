"""The HTML page of each report: parsed as a browser would (html5lib), checked against the JSON,
every value from DevRev or the CSV shown as text, nothing fetched, nothing run."""
from __future__ import annotations

import copy

import html5lib
import pytest

from devrev_sandbox.dataset import build_dataset
from helpers import MergeRun
from operator_view import html_page, reports

SVG_NS = "http://www.w3.org/2000/svg"
SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil.example/x","click me")'


def parse(path_or_text) -> "html5lib.treebuilders.etree":
    text = path_or_text if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("<!DOCTYPE") \
        else open(path_or_text, encoding="utf-8").read()
    return html5lib.parse(text, namespaceHTMLElements=False)


def text_of(element) -> str:
    return "".join(element.itertext())


def table(doc, table_id: str) -> tuple[list[str], list[dict]]:
    """(headings, [{column key: cell text (lines joined by newlines)}]) of a table of the page."""
    node = doc.find(f".//table[@id='{table_id}']")
    headings = [text_of(th) for th in node.findall("./thead/tr/th")]
    rows = []
    for tr in node.findall("./tbody/tr"):
        cells = {}
        for td in tr.findall("./td"):
            lines = [""]
            if td.text:
                lines[-1] += td.text
            for child in td:
                if child.tag == "br":
                    lines.append("")
                lines[-1] += child.tail or ""
            cells[td.get("data-column")] = "\n".join(lines)
        rows.append(dict(cells, _class=tr.get("class")))
    return headings, rows


def svg(doc, name: str) -> list:
    """The page's inline-SVG elements of this name (html5lib puts them in the SVG namespace)."""
    return [e for e in doc.iter() if isinstance(e.tag, str) and e.tag in (name, f"{{{SVG_NS}}}{name}")]


def bar_title(bar) -> str:
    return text_of(svg(bar, "title")[0])


def assert_self_contained_and_inert(doc) -> None:
    assert doc.findall(".//script") == [] and doc.findall(".//iframe") == [] and doc.findall(".//img") == []
    for element in doc.iter():
        assert not any(k.startswith("on") for k in element.attrib), element.attrib  # no event handlers
        for key in ("src", "href", "action"):
            assert key not in element.attrib, element.attrib   # nothing fetched, no links out
    csp = doc.find(".//meta[@http-equiv='Content-Security-Policy']")
    assert csp is not None and "default-src 'none'" in csp.get("content")


@pytest.fixture
def hostile_dataset():
    """The demo-like dataset, with DevRev answering hostile values for two contacts the live
    checks then skip: an email holding a script tag, an external_ref holding a formula."""
    dataset = build_dataset(3, seed=5, tickets=(1, 3), conversations=(1, 2), two_duplicate_sets=1)
    seed = copy.deepcopy(dataset.seed)
    users = {u["key"]: u for u in seed["rev_users"]}
    users["moved-dup0"]["email"] = f"{SCRIPT}@evil.example"
    renamed = next(k for k in users if k.startswith("renamed-") and "dup" in k)
    users[renamed]["external_ref"] = FORMULA
    dataset.seed = seed
    return dataset


def test_pages_escape_every_value_and_their_tables_match_the_json(tmp_path, monkeypatch, make_sandbox,
                                                                  hostile_dataset, capsys):
    sandbox = make_sandbox(hostile_dataset.seed)
    run = MergeRun(tmp_path, sandbox, hostile_dataset, monkeypatch)
    assert run.preview() == 0
    assert run.run() == 0
    for kind in ("preview", "merge_report"):
        report = run.latest_report(kind)
        (page,) = (tmp_path / "reports").glob(f"{kind}_*.html")
        raw = page.read_text(encoding="utf-8")
        assert SCRIPT not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
        doc = parse(str(page))
        assert_self_contained_and_inert(doc)
        assert SCRIPT in text_of(doc.find(".//body")) and FORMULA in text_of(doc.find(".//body"))
        rows = reports.merge_rows(report) if kind == "merge_report" else reports.preview_rows(report)
        _, shown = table(doc, "sets")
        assert [r["email"] for r in shown] == [r["email"] for r in rows]
        assert [r["status"] for r in shown] == [r["status"].replace("_", " ") for r in rows]
        number = "tickets_moved" if kind == "merge_report" else "tickets"
        assert [r[number] for r in shown] == ["" if r.get(number) is None else str(r[number]) for r in rows]
        assert [r["duplicate_refs"] for r in shown] == ["\n".join(r.get("duplicate_refs") or []) for r in rows]
        colours = {r["status"]: r["_class"] for r in shown}
        assert colours.get("skipped") == "skip" and colours.get("not a merge set") == "skip"
        assert colours.get("merged", colours.get("would_merge".replace("_", " "))) == "ok"
        problems = [text_of(li) for li in doc.findall(".//ul[@id='problems']/li")]
        skipped = [r for r in rows if r["status"] in ("skipped", reports.NOT_A_MERGE_SET)]
        assert len(problems) == len(skipped)
        assert all(p.split(" — ")[0] in {r["reason"] for r in skipped} for p in problems)  # reason first
        assert any(SCRIPT in p for p in problems) and any(FORMULA in p for p in problems)
    report = run.latest_report()
    totals = {text_of(tr.findall("td")[0]): text_of(tr.findall("td")[1])
              for tr in doc.findall(".//div[@class='block'][1]//tr")}
    assert totals["merged"] == str(report["totals"]["merged"]) == "3"
    assert totals["skipped by live checks"] == str(report["totals"]["skipped"]) == "5"
    assert totals["groups not merge sets"] == "4"
    _, folders = table(doc, "folders")
    backups = [b for r in reports.merge_rows(report) for b in r.get("backups") or []]
    assert sorted(p for r in folders for p in r[None].split("\n") if p) == sorted(backups) and backups
    header = {text_of(dt): text_of(dd) for dt, dd in zip(doc.findall(".//dl/dt"), doc.findall(".//dl/dd"))}
    assert header["CSV sha256"] == report["csv"]["sha256"] and header["exit code"].startswith("0 ")
    assert header["DevRev"] == sandbox.base_url
    bars = svg(doc, "rect")
    assert sum(int(bar_title(b).split(": ")[1].split()[0]) for b in bars) == report["api"]["calls"]
    # the CSV report shows the formula as text too
    csv_text = next((tmp_path / "reports").glob("merge_report_*.csv")).read_text(encoding="utf-8")
    assert "'=HYPERLINK(" in csv_text


def test_render_is_generic_for_other_scripts_reports():
    report = {"kind": "restore_report", "run_id": "r1", "started_at": "2026-01-01T00:00:00Z", "exit_code": 1,
              "options": {"backup_dir": "backups", "dry_run": True, "only": None},
              "results": [{"name": "folder-a", "status": "restored", "tickets": 3},
                          {"name": f"folder-{SCRIPT}", "status": "failed", "error": FORMULA}],
              "totals": {"restored": 1, "failed": 1}}
    doc = parse(html_page.render(report))
    assert_self_contained_and_inert(doc)
    assert text_of(doc.find(".//h1")) == "Restore report"
    headings, rows = table(doc, "sets")
    assert headings == ["name", "status", "tickets", "error"]
    assert [r["name"] for r in rows] == ["folder-a", f"folder-{SCRIPT}"] and rows[1]["_class"] == "bad"
    assert text_of(doc.find(".//ul[@id='problems']/li")).startswith("error — failed: folder-<script>")
    header = {text_of(dt): text_of(dd) for dt, dd in zip(doc.findall(".//dl/dt"), doc.findall(".//dl/dd"))}
    assert header["options"] == "backup_dir=backups, dry_run" and header["exit code"].startswith("1 (")


@pytest.mark.parametrize("limit, line_drawn", [(200, True), (60000, False)])
def test_the_chart_shows_calls_per_minute_against_the_rate_limit(limit, line_drawn):
    series = [{"minute": f"2026-01-01T00:0{m}Z", "calls": calls} for m, calls in enumerate([150, 199, 0, 80])]
    doc = parse(html_page.render({"kind": "merge_report", "calls_per_minute": series, "rate_limit": limit,
                                    "sets": []}))
    bars = svg(doc, "rect")
    assert [bar_title(b) for b in bars][1] == "2026-01-01T00:01Z: 199 calls"
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] == max(heights) and heights[2] == 0
    dashed = [line for line in svg(doc, "line") if line.get("stroke-dasharray")]
    assert bool(dashed) is line_drawn
    if line_drawn:  # the limit's line sits above the highest bar (smaller y is higher)
        assert float(dashed[0].get("y1")) < float(bars[1].get("y"))
    assert "429 calls over 4 minutes" in text_of(doc.find(".//body"))


def test_drift_since_the_preview_has_its_own_table():
    report = {"kind": "merge_report", "sets": [], "skipped": []}
    rows = [{"email": "a@x.example", "status": "merged", "drift_appeared": ["TKT-9", SCRIPT], "drift_vanished": []},
            {"email": "b@x.example", "status": "merged", "drift_appeared": [], "drift_vanished": []}]
    doc = parse(html_page.render(report, rows=rows, columns=reports.MERGE_HTML_COLUMNS[:2] + ["drift_appeared",
                                                                                                 "drift_vanished"]))
    headings, shown = table(doc, "sets")
    assert headings == ["email", "status"]  # drift is not repeated in the sets table
    drift = doc.find(".//table[@id='drift']")
    cells = [[text_of(td) for td in tr.findall("td")] for tr in drift.findall("./tbody/tr")]
    assert cells == [["a@x.example", f"TKT-9, {SCRIPT}", ""]]
    assert "Drift since the preview" not in text_of(parse(html_page.render({"kind": "preview", "sets": rows[:0]}))
                                                    .find(".//body"))

"""The default preview lists what moves exactly and estimates the rest from a sample;
`--preview --full` counts everything. Both are read-only."""
from __future__ import annotations

import backup
from devrev_client import DevRevClient
from devrev_sandbox.dataset import build_dataset
from helpers import TEST_TOKEN, MergeRun
from merging import call_estimates, preview_estimate


def _reads(sandbox, endpoint: str) -> int:
    return sum(1 for c in sandbox.api_calls() if c["endpoint"] == endpoint)


def test_default_preview_lists_exactly_what_moves_and_costs_a_fraction_of_the_merge(
        tmp_path, monkeypatch, make_sandbox, capsys):
    dataset = build_dataset(12, seed=7, big_set_tickets=130)
    sandbox = make_sandbox(dataset.seed)
    run = MergeRun(tmp_path, sandbox, dataset, monkeypatch)
    assert run.preview("--full") == 0
    full = run.latest_report("preview")
    full_calls = len(sandbox.api_calls())
    sandbox.clear_log()
    assert run.preview() == 0
    cheap = run.latest_report("preview")
    cheap_calls = len(sandbox.api_calls())
    assert "estimates from the first timeline page" in capsys.readouterr().out
    assert sandbox.write_attempts() == []
    for exact, sampled in zip(full["sets"], cheap["sets"]):
        assert exact["status"] == sampled["status"]
        for d_full, d_cheap in zip(exact.get("duplicates", []), sampled.get("duplicates", [])):
            for key in ("tickets", "ticket_ids", "conversations", "conversation_ids"):
                assert d_cheap[key] == d_full[key]
            assert d_full["estimated"] is False
    assert cheap["totals"]["estimated_contents"] is True and full["totals"]["estimated_contents"] is False
    # the estimate is in the right range on this data
    for key in ("messages", "attachments", "estimated_calls"):
        assert 0.5 * full["totals"][key] <= cheap["totals"][key] <= 1.5 * full["totals"][key], key
    sandbox.clear_log()
    assert run.run() == 0
    merge_calls = len(sandbox.api_calls())
    assert cheap_calls <= 0.25 * merge_calls < full_calls


def test_calls_from_counts_is_the_engines_estimate(make_sandbox):
    dataset = build_dataset(2, seed=3, big_set_tickets=230, skipped=False)
    sandbox = make_sandbox(dataset.seed)
    client = DevRevClient(TEST_TOKEN, sandbox.base_url, calls_per_minute=1e9)
    try:
        for ms in dataset.merge_sets:
            snap = backup.collect(client, sandbox.key_id(ms["duplicates"][0]))
            pages = sum(max(1, -(-len(es) // client.page_limit)) for es in snap.entries.values())
            for merge in (True, False):
                assert preview_estimate.calls_from_counts(
                    len(snap.tickets), len(snap.conversations), pages, len(snap.attachments), client.page_limit,
                    merge=merge) == call_estimates.estimate_calls(snap, client.page_limit, merge=merge)
    finally:
        client.close()


def test_sample_size_grows_slowly():
    assert [preview_estimate.sample_size(n) for n in (0, 1, 2, 5, 100, 500, 7000)] == [0, 1, 1, 1, 6, 26, 351]

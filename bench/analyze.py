"""Benchmark analysis + report: analyses and Markdown renders per second, on one core.

    python bench/analyze.py                # quick: 1 s per rule, 10 s over the mix
    python bench/analyze.py --full         # 5 s per rule, 60 s over the mix

The work measured is what the operator does for each new FalcoAlert, minus the API calls:
``analyze(event)`` (knowledge base, MITRE ATT&CK, evidence) and ``render_markdown(analysis)``
(the report stored in ``status.report``). Events are every sample in ``tests/data/events``
(Falco and Falcosidekick payloads, 25 rules) and ``examples/events``, loaded exactly as the
receiver would accept them (bounded, redacted). The process is pinned to one CPU
(``sched_setaffinity``) and warmed up first (knowledge base loaded, templates compiled,
every event analyzed and rendered once).

Per rule: the event(s) of that rule in a loop, analyses and renders per second and the time
each takes. Overall: all events round-robin. Target: 3,000 analyses + reports per second on
one core. Results go to ``bench/results/analyze.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, percentiles, record, say, write

TARGET_PER_SECOND = 3000


def load_samples() -> list[Any]:
    from falco_triage.events.normalize import load_events

    paths = sorted((REPO / "tests" / "data" / "events").glob("**/*.json"))
    paths += sorted((REPO / "examples" / "events").glob("*.json*"))
    events = []
    for path in paths:
        events.extend(load_events(path.read_bytes()))
    return events


def pin_to_one_core() -> int | None:
    """Pin this process to the last CPU it may use; the CPU number, or None if unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def run_loop(events: list[Any], seconds: float) -> dict[str, Any]:
    """Analyze and render ``events`` round-robin for ``seconds``; rates and per-call times."""
    from falco_triage.analysis import analyze
    from falco_triage.report import render_markdown

    analyze_times: list[float] = []
    render_times: list[float] = []
    clock = time.perf_counter
    done = 0
    report_bytes = 0
    started = clock()
    deadline = started + seconds
    while clock() < deadline:
        event = events[done % len(events)]
        t0 = clock()
        analysis = analyze(event)
        t1 = clock()
        report = render_markdown(analysis)
        t2 = clock()
        analyze_times.append(t1 - t0)
        render_times.append(t2 - t1)
        report_bytes += len(report)
        done += 1
    elapsed = clock() - started
    return {
        "seconds": round(elapsed, 3),
        "analyses_and_reports": done,
        "per_second": round(done / elapsed, 1),
        "analyze_ms": percentiles(analyze_times, scale=1000, digits=3),
        "render_ms": percentiles(render_times, scale=1000, digits=3),
        "analyze_share": round(sum(analyze_times) / (sum(analyze_times) + sum(render_times)), 3),
        "mean_report_bytes": round(report_bytes / max(done, 1)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="longer runs (5 s/rule, 60 s mix)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    per_rule_seconds, overall_seconds = (5.0, 60.0) if args.full else (1.0, 10.0)

    cpu = pin_to_one_core()
    say(f"pinned to CPU {cpu}; loading sample events")
    events = load_samples()
    by_rule: dict[str, list[Any]] = defaultdict(list)
    for event in events:
        by_rule[event.rule].append(event)

    say(f"warming up on {len(events)} events of {len(by_rule)} rules")
    run_loop(events, 2.0)
    gc.collect()

    per_rule = {}
    for rule, samples in sorted(by_rule.items()):
        result = run_loop(samples, per_rule_seconds)
        per_rule[rule] = {
            "events": len(samples),
            "per_second": result["per_second"],
            "analyze_ms_p50": result["analyze_ms"]["p50"],
            "render_ms_p50": result["render_ms"]["p50"],
            "analyze_plus_render_ms_p99": round(
                result["analyze_ms"]["p99"] + result["render_ms"]["p99"], 3
            ),
            "mean_report_bytes": result["mean_report_bytes"],
        }
        say(f"{rule}: {result['per_second']:.0f}/s")
    say(f"all events round-robin for {overall_seconds:.0f} s")
    overall = run_loop(events, overall_seconds)
    say(f"overall: {overall['per_second']:.0f} analyses + reports per second")

    rates = [r["per_second"] for r in per_rule.values()]
    document = record(
        "analyze",
        "full" if args.full else "quick",
        what="analyze(event) + render_markdown(analysis) per second, one core",
        config={
            "cpu_pinned": cpu,
            "events": len(events),
            "rules": len(by_rule),
            "sources": ["tests/data/events/**/*.json", "examples/events/*"],
            "warmup_seconds": 2.0,
            "per_rule_seconds": per_rule_seconds,
            "overall_seconds": overall_seconds,
        },
        results={
            "overall": overall,
            "slowest_rule_per_second": min(rates),
            "fastest_rule_per_second": max(rates),
            "per_rule": per_rule,
        },
        target={"analyses_and_reports_per_second_one_core": TARGET_PER_SECOND},
        ratio_to_target=round(overall["per_second"] / TARGET_PER_SECOND, 2),
        met=overall["per_second"] >= TARGET_PER_SECOND,
    )
    write("analyze", document, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

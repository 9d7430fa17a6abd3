"""Markdown tables of bench/results.json, for the README."""
import json
import sys
from pathlib import Path

from bench.plot import LABELS

ROOT = Path(__file__).resolve().parent.parent


def fmt(summary):
    if not summary:
        return "–"
    spread = f" ({summary['min']:.2f}–{summary['max']:.2f})" if summary["n"] > 1 else " (1 run)"
    return f"{summary['median']:.2f} s{spread}"


def main() -> int:
    r = json.loads((ROOT / "bench" / "results.json").read_text())
    sizes = sorted(r["apply"], key=int)
    out = ["| tool | " + " | ".join(f"apply N={n}" for n in sizes) + " | ratio to floor at N=" + sizes[-1]
           + " | " + " | ".join(f"no-op N={n}" for n in sizes) + " | peak RSS |",
           "| --- |" + " --- |" * (2 * len(sizes) + 2)]
    for tool, label in LABELS.items():
        if tool not in r["apply"][sizes[-1]]:
            continue
        row = [label] + [fmt(r["apply"][n][tool]["apply"]) for n in sizes]
        row.append(f"{r['apply'][sizes[-1]][tool]['apply_ratio_to_floor']:.2f}x")
        row += [fmt(r["apply"][n][tool]["noop"]) for n in sizes]
        row.append(f"{max(r['apply'][n][tool]['peak_rss_mib'] for n in sizes):.0f} MiB")
        out.append("| " + " | ".join(row) + " |")
    inproc = r["apply"][sizes[-1]]["engine"]["noop_in_process"]
    out.append("")
    out.append(f"Engine no-op at N={sizes[-1]}, measured inside the process (load, hash, one history query): "
               f"{inproc['median'] * 1000:.0f} ms (median of {inproc['n']}).")
    if r.get("drift_fingerprint"):
        d = r["drift_fingerprint"]
        out.append(f"Drift fingerprint (the one catalog query of a refresh) over {d['tables']} tables "
                   f"({d['objects']} objects): {d['seconds']['median'] * 1000:.0f} ms (median of {d['seconds']['n']}).")
    if r.get("pulumi_files"):
        out += ["", "| Pulumi, one MigratedSchema | " + " | ".join(f"N={n}" for n in r["pulumi_files"]) + " |",
                "| --- |" + " --- |" * len(r["pulumi_files"]),
                "| `pulumi up` from empty | " + " | ".join(f"{v['up']:.2f} s" for v in r["pulumi_files"].values())
                + " |",
                "| `pulumi preview`, no changes | " + " | ".join(fmt(v["preview_noop"])
                                                             for v in r["pulumi_files"].values()) + " |"]
    if r.get("pulumi_fanout"):
        out += ["", "| K schemas (10 files each) in one stack | " + " | ".join(f"K={k}" for k in r["pulumi_fanout"])
                + " |", "| --- |" + " --- |" * len(r["pulumi_fanout"]),
                "| `pulumi up` from empty | " + " | ".join(f"{v['up']:.2f} s" for v in r["pulumi_fanout"].values())
                + " |"]
    if r.get("not_measured"):
        out += [""] + [f"Not measured: {tool}: {why}" for tool, why in r["not_measured"].items()]
    adoption = ROOT / "bench" / "adoption-results.json"
    if adoption.exists():  # python -m bench.adoption (part of make bench)
        a = json.loads(adoption.read_text())
        out += ["", "Baseline proof (the files applied to a scratch schema and rolled back, compared with the live "
                "schema; `python -m bench.adoption`):", "", "| migrations | files | proof |", "| --- | --- | --- |"]
        for name, label in (("llmemory", "llmemory 0.5.0's own"), ("files_100", "generated: a table and an index each")):
            if name in a:
                r = a[name]
                out.append(f"| {label} | {r['files']} | {r['median'] * 1000:.0f} ms ({r['min'] * 1000:.0f}–"
                           f"{r['max'] * 1000:.0f}, median of {r['n']}) |")
    pileup_results = ROOT / "bench" / "pileup-results.json"
    if pileup_results.exists():  # python -m bench.pileup (part of make bench)
        from bench.pileup import table
        out += ["", "Lock-queue pile-up (`python -m bench.pileup`):", "", table(json.loads(pileup_results.read_text()))]
    fleet_results = ROOT / "bench" / "fleet-results.json"
    if fleet_results.exists():  # python -m bench.fleet (part of make bench)
        from bench.fleet import table as fleet_table
        out += ["", "One module, K tenant schemas (`python -m bench.fleet`):", "",
                fleet_table(json.loads(fleet_results.read_text()))]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plots of bench/results.json: docs/bench-apply.png (time against N, log scale) and docs/bench-fanout.png."""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LABELS = {"psql_floor": "psql, one transaction per file (floor)", "engine": "this engine (command line)",
          "pgdbm": "pgdbm 0.5", "dbmate": "dbmate 2.37", "yoyo": "yoyo-migrations 9.0",
          "flyway": "Flyway 11.20 (command line)"}


def main() -> int:
    results = json.loads((ROOT / "bench" / "results.json").read_text())
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    sizes = sorted(int(n) for n in results["apply"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, (tool, label) in enumerate(LABELS.items()):
        color = f"C{index}"  # one colour per tool in both panels
        xs = [n for n in sizes if tool in results["apply"][str(n)]]
        if not xs:
            continue
        ys = [results["apply"][str(n)][tool]["apply"]["median"] for n in xs]
        ax1.plot(xs, ys, marker="o", label=label, color=color)
        noop = [(n, results["apply"][str(n)][tool]["noop"]["median"]) for n in xs
                if results["apply"][str(n)][tool]["noop"]]
        if noop:
            ax2.plot([n for n, _ in noop], [v for _, v in noop], marker="o", label=label, color=color)
    for ax, title in ((ax1, "apply N migrations from empty"), (ax2, "no-op run over N applied files")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N migration files (table + index each)")
        ax.set_ylabel("seconds, whole process (median)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "bench-apply.png", dpi=110)

    if results.get("pulumi_fanout"):
        ks = sorted(int(k) for k in results["pulumi_fanout"])
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot(ks, [results["pulumi_fanout"][str(k)]["up"] for k in ks], marker="o", label="pulumi up, K schemas")
        one = results["pulumi_fanout"][str(ks[0])]["up"]
        ax.plot(ks, [one * k for k in ks], linestyle="--", label="K x the time of one (no parallelism)")
        ax.plot(ks, [one * 3 for _ in ks], linestyle=":", label="target: 3 x the time of one")
        ax.set_xlabel("K MigratedSchema components in one stack (10 files each)")
        ax.set_ylabel("seconds")
        ax.set_title("fan-out: one pulumi up")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(docs / "bench-fanout.png", dpi=110)
    print(f"plots in {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

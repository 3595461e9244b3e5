"""bench.png: throughput against p95 latency, one panel per workload, every mode a line."""
from __future__ import annotations

from pathlib import Path

from .modes import IN_PROCESS_MODES, INFINITY, SERVER_MODES, SERVER_MODES_COMPAT


def plot(report, path: Path) -> Path:
    """Throughput (seq/s) against p95 latency, one panel per workload, one line per mode, of ``report`` (a
    :class:`~exporter.bench.report.BenchReport`, which calls this: not imported here, so the two read one way)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(report.workloads)
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.8), squeeze=False)
    modes = [m for m in (*IN_PROCESS_MODES, *SERVER_MODES, *SERVER_MODES_COMPAT, INFINITY)
             if any(c.mode == m for c in report.cells)]
    for ax, workload in zip(axes[0], workloads):
        for mode in modes:
            cells = [c for c in report.cells if c.mode == mode and c.workload == workload and c.error is None]
            if not cells:
                continue
            xs, ys = [c.seq_per_s for c in cells], [c.p95_ms for c in cells]
            style = "o-" if mode in IN_PROCESS_MODES else "s--"
            ax.plot(xs, ys, style, label=mode)
            for c, x, y in zip(cells, xs, ys):
                ax.annotate(f"b{c.batch}" if mode in IN_PROCESS_MODES else f"c{c.concurrency}", (x, y),
                            fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_title(f"{report.model.get('name')}: {workload} ({report.workloads[workload]['texts']} texts)")
        ax.set_xlabel("throughput (seq/s)")
        ax.set_ylabel("p95 latency per call (ms)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.machine.get('cpu', '')} - {report.options.get('threads')} threads "
                 f"(in-process: b = batch; served: c = concurrency, 1 text/request)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)

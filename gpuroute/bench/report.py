"""Campaign reports: a table per configuration, plots, and a written summary.

A campaign's results are grouped by their ``config`` label (one group per configuration, in
the order first seen). Figures are averaged over the repeats that ended ``ok``; a failed or
partial repeat is counted but never averaged. Repeats are counted as the campaign's progress
line counts experiments: a repeat (an experiment) failed when its last attempt did, and the
failed attempts that were retried are counted apart. A figure that no repeat measured stays ``None``
(shown as ``-``), never zero. The spread is the sample standard deviation over repeats
(``n - 1`` in the denominator), so it needs at least two repeats.

Plots need matplotlib (the ``bench`` extra). It is imported only when a plot is drawn, and
only through ``Figure`` and ``FigureCanvasAgg``: pyplot and the global backend are left alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuroute.bench.result import Result, RoutedDevice
from gpuroute.core.table import format_table
from gpuroute.errors import BenchError
from gpuroute.term import paint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Row",
    "config_key",
    "gpu_labels",
    "render_table",
    "simulated_hosts",
    "summarize",
    "write_plots",
    "write_summary",
]

THROUGHPUT_VS_ENERGY = "throughput_vs_energy.png"
THROUGHPUT_BY_CONFIG = "throughput_by_config.png"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_INSTALL_HINT = "pip install 'gpuroute[plots]'"


@dataclass(frozen=True)
class Row:
    """One configuration of a campaign, summarised over its repeats."""

    config: str
    runner: str
    gpus: str
    """The routed devices' host labels in request order: ``0,1`` for GPUs, ``1:0`` for MIG.
    Where the repeats ran on different devices (``any:N``), each set they used, in the order
    first used, joined by `` | `` (``0,1 | 2,3``)."""
    repeats_ok: int
    repeats_failed: int
    """Repeats (experiments) whose last attempt did not end ``ok`` (failed or partial)."""
    attempts_failed: int
    """Attempts that did not end ``ok``, retried ones included; none is averaged."""
    output_tok_per_s_mean: float | None
    output_tok_per_s_std: float | None
    j_per_output_token_mean: float | None
    j_per_output_token_std: float | None
    gpu_energy_j_mean: float | None
    ttft_ms_p50_mean: float | None
    energy_note: str | None
    """Why energy is missing, when no ok repeat measured it."""
    simulated_host: str | None = None
    """The simulated host(s) the repeats ran on (their GPUs and energy are simulated), or
    None for real GPUs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- grouping and statistics ----------------------------------------------------------------


def config_key(result: Result) -> str:
    """The configuration a result belongs to: its ``config`` label, or else the runner, the
    model and the routing spec."""
    label = result.labels.get("config")
    if label:
        return label
    return f"{result.runner.name} {result.workload.model} gpus={result.routing.spec}"


def _device_label(device: RoutedDevice, plan_label: object) -> str:
    if isinstance(plan_label, str) and plan_label:
        return plan_label
    if device.mig_profile is None and device.uuid == device.gpu_uuid:
        return str(device.nvml_index)
    return device.uuid  # a MIG device without its index: its UUID is unambiguous


def gpu_labels(result: Result) -> str:
    """The routed devices' labels joined with commas (``0,1``; ``1:0`` for a MIG device).

    The labels come from the routing plan where it has them, else from the NVML indices.
    """
    planned = result.routing.plan.get("devices")
    plan_labels: list[object] = []
    if isinstance(planned, list) and len(planned) == len(result.routing.devices):
        plan_labels = [d.get("label") if isinstance(d, dict) else None for d in planned]
    else:
        plan_labels = [None] * len(result.routing.devices)
    return ",".join(
        _device_label(device, label)
        for device, label in zip(result.routing.devices, plan_labels, strict=True)
    )


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _present(results: Sequence[Result], get: Callable[[Result], float | None]) -> list[float]:
    return [v for v in (get(r) for r in results) if v is not None]


def _ttft_p50(result: Result) -> float | None:
    ttft = result.latency.ttft_ms
    return ttft.p50 if ttft is not None else None


def _energy_note(ok: Sequence[Result]) -> str | None:
    if not ok or any(r.energy.gpu_energy_j is not None for r in ok):
        return None
    reasons = list(dict.fromkeys(r.energy.unavailable_reason for r in ok))
    given = [reason for reason in reasons if reason]
    return "; ".join(given) if given else "not measured"


def _group(results: Sequence[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(config_key(result), []).append(result)
    return groups


def _experiments(group: Sequence[Result]) -> dict[str, list[Result]]:
    """A configuration's attempts by experiment (a result outside a campaign is its own)."""
    experiments: dict[str, list[Result]] = {}
    for result in group:
        experiments.setdefault(result.labels.get("experiment", result.run_id), []).append(result)
    return experiments


def _gpu_sets(group: Sequence[Result]) -> str:
    sets = [gpu_labels(r) for r in group if r.routing.devices]
    distinct = list(dict.fromkeys(sets)) or [gpu_labels(group[0])]
    return " | ".join(distinct)


def simulated_hosts(results: Sequence[Result]) -> str | None:
    """The simulated hosts among ``results``' (joined by commas), or None where all ran on
    real GPUs."""
    names = sorted({r.environment.simulated_host or "" for r in results} - {""})
    return ", ".join(names) or None


def _row(config: str, group: Sequence[Result]) -> Row:
    ok = [r for r in group if r.status == "ok"]
    first = ok[0] if ok else group[0]
    tok_s = _present(ok, lambda r: r.throughput.output_tok_per_s)
    j_tok = _present(ok, lambda r: r.energy.j_per_output_token)
    experiments = _experiments(group).values()
    repeats_ok = sum(any(r.status == "ok" for r in attempts) for attempts in experiments)
    return Row(
        config=config,
        runner=first.runner.name,
        gpus=_gpu_sets(group),
        repeats_ok=repeats_ok,
        repeats_failed=len(experiments) - repeats_ok,
        attempts_failed=len(group) - len(ok),
        output_tok_per_s_mean=_mean(tok_s),
        output_tok_per_s_std=_std(tok_s),
        j_per_output_token_mean=_mean(j_tok),
        j_per_output_token_std=_std(j_tok),
        gpu_energy_j_mean=_mean(_present(ok, lambda r: r.energy.gpu_energy_j)),
        ttft_ms_p50_mean=_mean(_present(ok, _ttft_p50)),
        energy_note=_energy_note(ok),
        simulated_host=simulated_hosts(group),
    )


def summarize(results: Sequence[Result]) -> list[Row]:
    """One row per configuration, in the order the configurations first appear."""
    return [_row(config, group) for config, group in _group(results).items()]


# -- the table ------------------------------------------------------------------------------


def _decimals(value: float) -> int:
    """Decimals for about three or four significant figures."""
    size = abs(value)
    if size >= 100:
        return 1
    if size >= 1 or size == 0 or not math.isfinite(size):
        return 2
    return 2 - math.floor(math.log10(size))


def _fmt(value: float | None, decimals: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.{_decimals(value) if decimals is None else decimals}f}"


def _fmt_spread(mean: float | None, std: float | None) -> str:
    """``mean ± std``, the spread to the mean's precision."""
    if mean is None:
        return "-"
    if std is None:
        return _fmt(mean)
    decimals = _decimals(mean)
    return f"{_fmt(mean, decimals)} ± {_fmt(std, decimals)}"


_HEADERS = (
    "config",
    "runner",
    "gpus",
    "ok",
    "failed",
    "out tok/s",
    "J/out tok",
    "GPU energy J",
    "TTFT p50 ms",
)
_LEFT = 3  # the first three columns are text, left-aligned; the rest are numbers


_NARROW = (0, 2, 3, 4, 5, 6, 8)
"""The columns shown by default in a terminal: all but the runner (the config names it) and
the total energy (the energy per token is there)."""
SIMULATED_MARK = "*"


def _cells(row: Row) -> tuple[str, ...]:
    mark = SIMULATED_MARK if row.simulated_host else ""
    energy = _fmt_spread(row.j_per_output_token_mean, row.j_per_output_token_std)
    total = _fmt(row.gpu_energy_j_mean)
    return (
        row.config,
        row.runner,
        row.gpus,
        str(row.repeats_ok),
        str(row.repeats_failed),
        _fmt_spread(row.output_tok_per_s_mean, row.output_tok_per_s_std),
        energy + mark if energy != "-" else energy,
        total + mark if total != "-" else total,
        _fmt(row.ttft_ms_p50_mean),
    )


def render_table(
    rows: Sequence[Row], *, wide: bool = True, width: int | None = None, colour: bool = False
) -> str:
    """A plain-text table, one line per configuration, aligned, with units in the headers.

    ``-`` marks a figure no repeat measured; ``a ± b`` is the mean and the sample standard
    deviation over the ok repeats; ``*`` marks an energy figure of a simulated host. Below
    the table, which hosts were simulated, why energy is missing where it is, and a last
    line counting the failed repeats (experiments) and, where some were retried, the failed
    attempts.

    ``wide`` (the default, as in ``summary.md``) shows every column in full; otherwise the
    runner and the total energy are left out, the words every configuration has are said
    once below the table instead of on each line and, with ``width``, the configurations and
    GPU sets are cut to fit it. ``colour`` colours the lines of configurations with failures.
    """
    columns = range(len(_HEADERS)) if wide else _NARROW
    headers = [_HEADERS[c] for c in columns]
    body = [[_cells(row)[c] for c in columns] for row in rows]
    shared: list[str] = []
    if not wide and len(rows) > 1:  # the words every configuration has, said once above
        words = [row.config.split(" ") for row in rows]
        shared = [w for w in words[0] if all(w in others for others in words[1:])]
        for cells, own in zip(body, words, strict=True):
            cells[0] = " ".join(w for w in own if w not in shared) or cells[0]
    align = "".join("<" if c < _LEFT else ">" for c in columns)
    table = format_table(
        headers,
        body,
        align=align,
        rule=True,
        max_width=None if wide else width,
        shrink=[i for i, c in enumerate(columns) if c in (0, 2)],  # config, gpus
    ).split("\n")
    for i, row in enumerate(rows):
        if row.repeats_failed or row.attempts_failed:
            table[i + 2] = paint(table[i + 2], "warn" if row.repeats_ok else "fail", colour)
    notes: list[str] = []
    simulated = sorted({row.simulated_host for row in rows if row.simulated_host})
    if simulated:
        notes.append("")
        notes.append(
            f"{SIMULATED_MARK} simulated host {', '.join(simulated)}: its GPUs and their energy "
            "are simulated; no GPU ran the work"
        )
    missing = [f"  {row.config}: {row.energy_note}" for row in rows if row.energy_note]
    if missing:
        notes.append("")
        notes.append("no energy measured:")
        notes.extend(missing)
    fit = None if wide else width
    out = ["\n".join(table)]
    if shared:
        notes[:0] = ["", "every config: " + " ".join(shared)]
    for note in notes:
        out.extend(textwrap.wrap(note, fit, subsequent_indent="    ") if fit and note else [note])
    failed = sum(row.repeats_failed for row in rows)
    total = failed + sum(row.repeats_ok for row in rows)
    attempts = sum(row.attempts_failed for row in rows)
    out.append("")
    footer = f"{failed} of {total} experiment{'' if total == 1 else 's'} failed"
    if attempts > failed:
        footer += f"; {attempts} failed attempt{'' if attempts == 1 else 's'}, retries included"
    out.append(footer)
    return "\n".join(out) + "\n"


# -- the written summary --------------------------------------------------------------------


def _failures(results: Sequence[Result]) -> list[str]:
    lines = []
    for result in results:
        if result.status == "ok":
            continue
        repeat = result.labels.get("repeat")
        where = f"`{config_key(result)}`" + (f" repeat {repeat}" if repeat else "")
        error = (result.error or "no error message").strip().replace("\n", " ")
        lines.append(f"- {where} ({result.status}, run `{result.run_id}`): {error}")
    return lines


def write_summary(results: Sequence[Result], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``summary.md`` (the table and the failures) and ``summary.json`` (the rows, a
    list of objects) into ``out_dir``; return the path of ``summary.md``."""
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    campaigns = list(dict.fromkeys(r.labels["campaign"] for r in results if "campaign" in r.labels))
    title = f"# Campaign {', '.join(campaigns)}" if campaigns else "# Benchmark summary"
    failures = _failures(results)
    md = [title, "", "```", render_table(rows).rstrip("\n"), "```", "", "## Failures", ""]
    md.extend(failures if failures else ["No run failed."])
    md_path = target / SUMMARY_MD
    md_path.write_text("\n".join(md) + "\n")
    json_path = target / SUMMARY_JSON
    json_path.write_text(json.dumps([row.to_dict() for row in rows], indent=2) + "\n")
    return md_path


# -- plots ----------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise BenchError(
            f"the campaign plots need matplotlib, which is not installed: {_INSTALL_HINT}"
        ) from exc


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plot_throughput_vs_energy(results: Sequence[Result], rows: Sequence[Row], path: Path) -> None:
    groups = _group(results)
    with_energy = [row for row in rows if row.j_per_output_token_mean is not None]
    without = [row for row in rows if row.repeats_ok and row.j_per_output_token_mean is None]
    figure = _new_figure(8.0, 5.5 + 0.22 * len(with_energy))
    ax: Axes = figure.add_subplot()
    labelled = False
    for i, row in enumerate(rows):
        if row.j_per_output_token_mean is None:
            continue
        colour, marker = f"C{i % 10}", _MARKERS[i % len(_MARKERS)]
        points = [
            (r.energy.j_per_output_token, r.throughput.output_tok_per_s)
            for r in groups[row.config]
            if r.status == "ok"
        ]
        xs = [x for x, y in points if x is not None and y is not None]
        ys = [y for x, y in points if x is not None and y is not None]
        ax.scatter(xs, ys, color=colour, marker=marker, alpha=0.5, s=36, linewidths=0)
        if row.output_tok_per_s_mean is not None:
            labelled = True
            ax.errorbar(
                [row.j_per_output_token_mean],
                [row.output_tok_per_s_mean],
                xerr=None if row.j_per_output_token_std is None else [row.j_per_output_token_std],
                yerr=None if row.output_tok_per_s_std is None else [row.output_tok_per_s_std],
                color=colour,
                marker=marker,
                markersize=9,
                markeredgecolor="black",
                capsize=4,
                linestyle="none",
                label=f"{row.config} (n={row.repeats_ok})",
            )
    simulated = simulated_hosts(results)
    ax.set_xlabel(
        "energy per output token (J/token, "
        + (f"SIMULATED host {simulated}, not a measurement)" if simulated else "GPU board, NVML)")
    )
    ax.set_ylabel("output throughput (tokens/s)")
    title = "Throughput vs energy: faint points are repeats, bars are mean ± std"
    if simulated:
        title = f"SIMULATED host {simulated}. {title}"
    figure.suptitle(title, color="firebrick" if simulated else "black")
    ax.grid(True, alpha=0.3)
    if labelled:
        figure.legend(loc="outside lower center", fontsize="small", title="configuration")
    notes = []
    if without:
        notes.append("no energy measured: " + ", ".join(row.config for row in without))
    failed_only = [row.config for row in rows if not row.repeats_ok]
    if failed_only:
        notes.append("no successful run: " + ", ".join(failed_only))
    if not with_energy:
        ax.text(0.5, 0.5, "nothing to plot", ha="center", va="center", transform=ax.transAxes)
    if notes:
        wrapped = ["\n".join(textwrap.wrap(note, 110, subsequent_indent="    ")) for note in notes]
        ax.set_title("\n".join(wrapped), fontsize="small", color="dimgray", loc="left")
    figure.savefig(path, metadata={"Title": title})


def _plot_throughput_by_config(rows: Sequence[Row], path: Path) -> None:
    simulated = sorted({row.simulated_host for row in rows if row.simulated_host})
    longest = max((len(row.config) for row in rows), default=0)
    figure = _new_figure(7.0 + 0.07 * longest, 1.5 + 0.5 * max(len(rows), 1))
    ax: Axes = figure.add_subplot()
    positions = list(range(len(rows)))
    means = [row.output_tok_per_s_mean or 0.0 for row in rows]
    errors = [
        math.nan if row.output_tok_per_s_std is None else row.output_tok_per_s_std for row in rows
    ]
    colours = [f"C{i % 10}" for i in range(len(rows))]
    bars = ax.barh(positions, means, xerr=errors, color=colours, capsize=4, alpha=0.85)
    ax.bar_label(
        bars,
        labels=[
            "no ok run"
            if row.output_tok_per_s_mean is None
            else _fmt_spread(row.output_tok_per_s_mean, row.output_tok_per_s_std)
            for row in rows
        ],
        padding=4,
        fontsize="small",
    )
    ax.set_yticks(positions, [row.config for row in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("output throughput (tokens/s, mean ± std over ok repeats)")
    title = "Output throughput by configuration"
    if simulated:
        title += f" (SIMULATED host {', '.join(simulated)}: no GPU ran the work)"
    ax.set_title(title, color="firebrick" if simulated else "black")
    ax.margins(x=0.2)
    ax.grid(True, axis="x", alpha=0.3)
    figure.savefig(path, metadata={"Title": title})


def write_plots(results: Sequence[Result], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw ``throughput_vs_energy.png`` and ``throughput_by_config.png`` into ``out_dir``.

    Raises :class:`BenchError` when matplotlib is not installed (the ``bench`` extra).
    """
    _require_matplotlib()
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    scatter = target / THROUGHPUT_VS_ENERGY
    _plot_throughput_vs_energy(results, rows, scatter)
    bars = target / THROUGHPUT_BY_CONFIG
    _plot_throughput_by_config(rows, bars)
    return [scatter, bars]

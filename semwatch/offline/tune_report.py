"""The ``semwatch tune`` report: Markdown with PNG plots, and the terminal summary."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional

from semwatch.contract import format_ts, is_optional, parse_ts
from semwatch.offline.evaluate import (
    fmt_duration,
    format_table,
    segments_consistent,
)
from semwatch.offline.tune_data import Candidate, DetectorSweep, TuneResult, nab_of


# -- report ------------------------------------------------------------------------------------------
def _fmt(x: Optional[float], spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_tradeoff(s: DetectorSweep, budget: Optional[float], labelled: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra: list = []
    if labelled and s.windows:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        groups: dict[tuple[float, float], list[Candidate]] = {}
        for c in s.candidates:
            groups.setdefault((round(c.fa_per_day, 6), round(c.row.recall or 0.0, 6)), []).append(c)
        xs = [k[0] for k in groups]
        ys = [k[1] for k in groups]
        nab = [max(nab_of(c, 0.0) for c in g) for g in groups.values()]
        sizes = [40 + 25 * (len(g) - 1) for g in groups.values()]
        sc = ax.scatter(xs, ys, c=nab, s=sizes, cmap="viridis", vmin=min(0.0, min(nab)), vmax=100,
                        edgecolors="k", linewidths=0.5, zorder=3, label="candidates (size: how many)")
        fig.colorbar(sc, ax=ax, label="best NAB score at the point")
        for (x, y), g in groups.items():
            if len(g) > 1:
                ax.annotate(f"×{len(g)}", (x, y), textcoords="offset points", xytext=(7, -10), fontsize=8)
        conf = s.candidates[0]
        ax.scatter([conf.fa_per_day], [conf.row.recall or 0.0], s=260, facecolors="none",
                   edgecolors="tab:blue", linewidths=1.8, zorder=4, label="configured")
        if s.chosen is not None:
            ax.scatter([s.chosen.fa_per_day], [s.chosen.row.recall or 0.0], marker="*", s=380,
                       color="tab:red", edgecolors="k", zorder=5, label=f"chosen: {s.chosen.label}")
        ax.set_ylabel(f"recall ({s.windows} labelled {s.kind} windows)")
        ax.set_ylim(-0.05, 1.08)
        ax.set_xlabel("false alarms per day")
    else:
        fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.32 * len(s.candidates)), dpi=110)
        labels = [c.label for c in s.candidates]
        vals = [c.fa_per_day for c in s.candidates]
        colors = ["tab:red" if c is s.chosen else ("tab:blue" if c.configured else "tab:gray")
                  for c in s.candidates]
        from matplotlib.patches import Patch

        bars = ax.barh(range(len(vals)), vals, color=colors)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=7, padding=2)
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("false alarms per day" if labelled else "alerts per day")
        ax.set_xlim(right=max(vals + [budget or 0.0, 1.0]) * 1.15)
        extra = [Patch(color=color, label=text) for color, text in
                 (("tab:red", "chosen"), ("tab:blue", "configured"), ("tab:gray", "other settings"))]
    if budget is not None:
        ax.axvline(budget, color="tab:red", linestyle="--", linewidth=1.2, label=f"budget {budget:g}/day")
    ax.set_xlim(left=-0.05 * max(1.0, ax.get_xlim()[1]))
    ax.set_title(f"{s.name} ({s.type}): {len(s.candidates)} settings", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if extra:  # bars: the legend goes outside, next to the plot
        ax.legend(handles=handles + extra, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_window(index: int, label: dict, panels: list[tuple[DetectorSweep, dict]], path: Path,
                slack_before_s: float, slack_after_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = parse_ts(label["start"]), parse_ts(label["end"])
    n = len(panels)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.6 * n + 0.9), dpi=100, sharex=True, squeeze=False)
    seg = "/".join(str(v) for v in (label.get("segment") or {}).values())
    note = textwrap.shorten(label.get("note", ""), 110)
    fig.suptitle(f"window {index}: {label['kind']} on {seg}, {format_ts(start)[:19]} to "
                 f"{format_ts(end)[11:19]} UTC\n{note}", fontsize=9)

    def rel(t: float) -> float:
        return (t - start) / 60.0

    for ax, (s, series) in zip(axes[:, 0], panels):
        ax.axvspan(rel(start - slack_before_s), rel(start), color="tab:orange", alpha=0.10)
        ax.axvspan(rel(start), rel(max(end, start + 20)), color="tab:red", alpha=0.18,
                   label="labelled window")
        ax.axvspan(rel(max(end, start + 20)), rel(end + slack_after_s), color="tab:orange", alpha=0.12,
                   label="match slack / grace")
        lo, hi = series["lo"], series["hi"]
        incs = [i for i in (s.timeline or {}).get("incidents", [])
                if lo <= parse_ts(i["detected_at"]) <= hi
                and segments_consistent(label.get("segment") or {}, i.get("segment") or {})]
        pts = series["points"]
        ax2 = None
        if series["signal"] and pts:
            ts = [rel(p[0]) for p in pts]
            ax.plot(ts, [p[1] if p[1] is not None else math.nan for p in pts], color="tab:blue",
                    linewidth=1.3, label=series["signal"])
            if series.get("signal2"):
                ax.plot(ts, [p[4] if p[4] is not None else math.nan for p in pts], color="tab:purple",
                        linewidth=1.3, label=series["signal2"])
            if any(p[2] is not None for p in pts):
                ax.plot(ts, [p[2] if p[2] is not None else math.nan for p in pts], color="tab:gray",
                        linestyle=":", linewidth=1.2, label="baseline")
            if any(p[3] is not None for p in pts):
                ax.step(ts, [p[3] if p[3] is not None else math.nan for p in pts], where="post",
                        color="tab:red", linestyle="--", linewidth=1.2,
                        label=series.get("threshold_label") or "threshold")
            ax.set_ylabel("signal", fontsize=8)
            title = f"{s.name} ({s.chosen.label if s.chosen else ''}): per-evaluation signal"
        else:
            rate = series["rate"]
            if rate:
                ax.bar([rel(m * 60 + 30) for m, _ in rate], [c for _, c in rate], width=1.0,
                       color="tab:blue", alpha=0.55, label="events/min in the labelled segment")
            thr = [i["threshold"] for i in incs if i["event_action"] == "trigger" and i.get("threshold")]
            if thr:
                ax2 = ax.twinx()
                ax2.axhline(thr[0], color="tab:red", linestyle="--", linewidth=1.2, label="trigger threshold")
                obs = [(rel(parse_ts(i["detected_at"])), i["observed"]) for i in incs
                       if i["event_action"] == "trigger" and i.get("observed") is not None]
                if obs:
                    ax2.scatter([o[0] for o in obs], [o[1] for o in obs], color="tab:red", zorder=5,
                                label="observed at trigger")
                ax2.set_ylabel("value at trigger", fontsize=8)
            ax.set_ylabel("events/min", fontsize=8)
            why = series["unavailable"] or "no signal recorded"
            title = f"{s.name} ({s.chosen.label if s.chosen else ''}): no signal — {why}; event rate shown"
        for i in incs:
            x = rel(parse_ts(i["detected_at"]))
            if i["event_action"] == "trigger":
                ax.axvline(x, color="tab:green", linewidth=2.0)
            else:
                ax.axvline(x, color="black", linestyle=":", linewidth=1.2)
        ax.plot([], [], color="tab:green", linewidth=2.0, label="trigger")
        ax.plot([], [], color="black", linestyle=":", linewidth=1.2, label="resolve")
        ax.set_title(title, fontsize=8.5, loc="left")
        ax.grid(True, alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        if ax2 is not None:  # one legend for both y axes
            h2, n2 = ax2.get_legend_handles_labels()
            handles, names = handles + h2, names + n2
        ax.legend(handles, [textwrap.fill(t, 34) for t in names], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01 if ax2 is None else 1.07, 1.0), borderaxespad=0.0)
        ax.set_xlim(rel(lo), rel(hi))
    axes[-1, 0].set_xlabel("minutes from the labelled start")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: TuneResult, path: Path, *, events_path: str = "", config_dir: str = "",
                 out_config: Optional[Path] = None, plots: bool = True) -> list[Path]:
    """The Markdown report and its PNGs (next to it, named after it). Returns the PNG paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    pngs: list[Path] = []
    L: list[str] = []
    budget = result.budget
    unit = "false alarms/day" if result.labelled else "alerts/day"
    L.append("# semwatch tune report\n")
    span = (f"{format_ts(result.first_ts)} to {format_ts(result.last_ts)} ({result.days:.2f} days)"
            if result.days else "(no span)")
    L.append(f"- events: `{events_path}` — {result.events} events, {result.rejected} rejected, {span}")
    L.append(f"- config: `{config_dir}`" + (f" → tuned config `{out_config}`" if out_config else
                                            " (no tuned config written)"))
    n_optional = sum(1 for lab in result.labels or [] if is_optional(lab))
    L.append(f"- labels: {len(result.labels or []) - n_optional} windows"
             + (f" (and {n_optional} optional ones)" if n_optional else "") if result.labelled else
             "- labels: none — alert volumes only" + ("; picked by volume" if result.picked else ""))
    L.append(f"- budget: {budget:g} {unit} per detector" if budget is not None else "- budget: none given")
    runs = sum(len(s.candidates) for s in result.sweeps)
    sweep_s = result.seconds.get("sweep", 0.0)
    cpu = sum(c.seconds for s in result.sweeps for c in s.candidates)
    rate = result.events * runs / cpu if cpu else 0.0
    L.append(f"- {runs} replays on {result.jobs} process(es) in {sweep_s:.0f} s wall "
             f"({rate:,.0f} events/s per replay); enrichment {result.seconds.get('enrich', 0):.0f} s, "
             f"timelines {result.seconds.get('timelines', 0):.0f} s")
    L.append(f"- matching (labels): kind, consistent segment, detected_at in [start − "
             f"{result.slack_before_s:g} s, end + {result.slack_after_s:g} s]; NAB A_fp = {result.a_fp:g}\n")
    warnings = result.warnings()
    if warnings:
        L.append("## ⚠ Budget not met\n")
        for w in warnings:
            L.append(f"- **{w}**")
        L.append("")
    L.append("## Chosen settings\n")
    if result.labelled:
        L.append("Per detector: the highest recall within the budget, then the highest NAB score "
                 "(earliness), then the fewest false alarms, then the configured setting.\n")
        L.append("| detector | type | kind | windows | settings | chosen | recall | FA/day | NAB "
                 "| TTD p50 | within budget | note |")
        L.append("|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---|")
        for s in result.sweeps:
            c = s.chosen
            r = c.row if c else None
            L.append(f"| {s.name} | {s.type} | {s.kind} | {s.windows} | {len(s.candidates)} | "
                     f"{c.label if c else '-'} | {_fmt(r.recall if r else None)} | "
                     f"{_fmt(c.fa_per_day if c else None)} | {_fmt(r.nab_score if r else None, '.1f')} | "
                     f"{fmt_duration(r.ttd_median_s) if r else '-'} | "
                     f"{'yes' if s.within_budget else '**NO**'} | {s.note} |")
        total = sum(s.chosen.fa_per_day for s in result.sweeps if s.chosen)
        L.append(f"\nCombined, the chosen settings raise **{total:.2f} false alarms/day** on this "
                 f"data (sum over detectors; the budget applies per detector).\n")
        if result.combined is not None:
            L.append("### Chosen settings on the tuning data (all detectors together)\n")
            L.append(format_table(result.combined, markdown=True) + "\n")
        if result.configured_combined is not None:
            L.append("### Configured settings on the same data, for comparison\n")
            L.append(format_table(result.configured_combined, markdown=True) + "\n")
    else:
        L.append("Alert volume per day of every candidate (all alerts count: without labels none can "
                 "be told true or false).\n")
        L.append("| detector | type | setting | alerts | alerts/day | chosen |")
        L.append("|---|---|---|---:|---:|---|")
        for s in result.sweeps:
            for c in s.candidates:
                mark = "**chosen**" if c is s.chosen else ""
                L.append(f"| {s.name} | {s.type} | {c.label} | {c.triggers} "
                         f"| {_fmt(c.alerts_per_day)} | {mark} |")
        L.append("")
        if result.picked:
            L.append("Picked per detector: the most alerts per day within the budget (the most "
                     "sensitive setting the budget allows).\n")
            for s in result.sweeps:
                L.append(f"- {s.name}: {s.chosen.label if s.chosen else '-'} — {s.note}")
            L.append("")
    unknown = [(s.name, s.unknown_space) for s in result.sweeps if s.unknown_space]
    if unknown:
        L.append("Sweep-space entries these detectors do not have (fix `semwatch/engine/tuning.py`): "
                 + "; ".join(f"{n}: {', '.join(u)}" for n, u in unknown) + "\n")

    L.append("## Detectors\n")
    for s in result.sweeps:
        L.append(f"### {s.name} ({s.type}, kind {s.kind})\n")
        if s.skipped:
            L.append(f"{s.note}.\n")
        if plots and len(s.candidates) > 1:
            png = path.parent / f"{stem}-tradeoff-{_safe(s.name)}.png"
            plot_tradeoff(s, budget, result.labelled, png)
            pngs.append(png)
            L.append(f"![{s.name}: recall against false alarms per day]({png.name})\n")
        if result.labelled:
            L.append("| setting | triggers | FA | FA/day | precision | recall | NAB | TTD p50 | TTD p90 |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            order = sorted(s.candidates, key=lambda c: (-(c.row.recall or 0), -nab_of(c),
                                                        c.fa_per_day, c.index))
            for c in order:
                r = c.row
                name = f"**{c.label}** (chosen)" if c is s.chosen else c.label
                L.append(f"| {name} | {r.triggers} | {r.false_alarms} | {_fmt(r.false_alarms_per_day)} | "
                         f"{_fmt(r.precision)} | {_fmt(r.recall)} | {_fmt(r.nab_score, '.1f')} | "
                         f"{fmt_duration(r.ttd_median_s)} | {fmt_duration(r.ttd_p90_s)} |")
            L.append("")

    if result.labelled and result.labels:
        L.append("## Labelled windows\n")
        L.append("Each plot: one panel per detector of the window's kind, with its chosen setting. "
                 "The signal is read from the detector's own state after every event of a replay "
                 "(one value per evaluation); where a detector keeps no such signal (e.g. the "
                 "point detector `wrong_entity_action`), the panel shows events per minute in the "
                 "labelled segment with the triggers and resolves instead, and says so. Red band: "
                 "the labelled window; orange: the matching slack before and grace after.\n")
        for wi, lab in enumerate(result.labels, 1):
            panels = []
            for s in result.sweeps:
                if s.timeline is None or s.kind != lab["kind"]:
                    continue
                for ser in s.timeline["series"]:
                    w = ser["window"]
                    if (w["start"] == parse_ts(lab["start"]) and w["end"] == parse_ts(lab["end"])
                            and w["segment"] == (lab.get("segment") or {})):
                        panels.append((s, ser))
                        break
            detected = []
            if result.combined is not None:
                d = result.combined.windows[wi - 1]["detected_by"]
                detected = [f"{k} after {fmt_duration(v['ttd_s'])}" for k, v in d.items()]
            seg = ", ".join(f"{k}={v}" for k, v in (lab.get("segment") or {}).items())
            L.append(f"### Window {wi}: {lab['kind']} — {seg}\n")
            L.append(f"{lab['start']} to {lab['end']}. {lab.get('note', '')}  ")
            L.append(f"Detected by: {', '.join(detected) if detected else '**nobody**'}\n")
            if plots and panels:
                png = path.parent / f"{stem}-window-{wi:02d}-{_safe(lab['kind'])}.png"
                plot_window(wi, lab, panels, png, result.slack_before_s, result.slack_after_s)
                pngs.append(png)
                L.append(f"![window {wi}]({png.name})\n")
                for s, ser in panels:
                    if not ser["signal"]:
                        L.append(f"- {s.name}: no per-evaluation signal ({ser['unavailable']}); "
                                 "the panel shows the event rate, triggers and resolves.")
                L.append("")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    return pngs


def summary_text(result: TuneResult) -> str:
    """What the terminal shows after a sweep."""
    out = []
    if result.marks:
        marked = {s.name: s.candidates[0].marked for s in result.sweeps if s.candidates[0].marked}
        out.append(f"on-call feedback: {result.marks} false-alarm marks; the configured settings raise "
                   f"{sum(marked.values())} of them ({', '.join(f'{k}: {v}' for k, v in marked.items()) or 'none'}); "
                   "marked triggers count as false alarms")
    if result.labelled:
        w = max([len(s.name) for s in result.sweeps] + [8])
        out.append(f"{'detector':<{w}}  {'settings':>8}  {'recall':>6}  {'FA/day':>6}  {'NAB':>6}  chosen")
        for s in result.sweeps:
            c = s.chosen
            r = c.row if c else None
            flag = "" if s.within_budget else "   <-- OVER BUDGET"
            out.append(f"{s.name:<{w}}  {len(s.candidates):>8}  {_fmt(r.recall if r else None):>6}  "
                       f"{_fmt(c.fa_per_day if c else None):>6}  "
                       f"{_fmt(r.nab_score if r else None, '.1f'):>6}  "
                       f"{c.label if c else '-'}{flag}")
        total = sum(s.chosen.fa_per_day for s in result.sweeps if s.chosen)
        out.append(f"combined: {total:.2f} false alarms/day (budget {result.budget:g} per detector)")
        if result.combined is not None:
            out.append("")
            out.append(format_table(result.combined))
    else:
        out.append("alert volume per day of each candidate setting:")
        for s in result.sweeps:
            out.append(f"  {s.name} ({s.type})")
            for c in s.candidates:
                mark = "  <- chosen" if c is s.chosen else ""
                marked = f" ({c.marked} marked false)" if result.marks else ""
                out.append(f"    {_fmt(c.alerts_per_day):>8}/day  {c.triggers:>5} alerts{marked}  {c.label}{mark}")
    for wmsg in result.warnings():
        out.append(f"WARNING: {wmsg}")
    return "\n".join(out)

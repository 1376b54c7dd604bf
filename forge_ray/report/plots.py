"""The run report's figures: matplotlib (Agg, no display) rendered to SVG data URIs.

Each function takes plain lists / dicts and returns `data:image/svg+xml;base64,...` for an
<img>; text stays text in the SVG (svg.fonttype "none"), so a page search finds a domain name.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "svg.fonttype": "none",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "forge",  # stable ids: the same inputs give the same file
}


def _to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(ax, names: list[str], series: dict[str, list[float | None]], fmt: str = "{:.2f}") -> None:
    """Grouped bars: one group per name, one bar per series (None: no bar)."""
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
        pairs = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        if not pairs:
            continue
        bars = ax.bar([x for x, _ in pairs], [v for _, v in pairs], width, label=label)
        ax.bar_label(bars, labels=[fmt.format(v) for _, v in pairs], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), names)
    _legend_outside(ax)


def _legend_outside(ax) -> None:
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def loss_plot(steps: list[int], total: list[float], by_domain: dict[str, list[float | None]]) -> str:
    """Training loss over steps: the total and one line per domain."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(steps, total, color="black", linewidth=2, label="total")
        for domain, values in by_domain.items():
            pts = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
            ax.plot([s for s, _ in pts], [v for _, v in pts], linewidth=1.2, label=domain)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats / token)")
        ax.set_title("Training loss per domain")
        ax.legend(frameon=False)
        return _to_data_uri(fig)


def mixture_plot(names: list[str], shares: dict[str, list[float | None]]) -> str:
    """Mixture shares per source: target, planned (after caps) and realised."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        _bars(ax, names, shares, fmt="{:.1%}")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_ylabel("share of training samples")
        ax.set_title("Data mixture: target vs realised")
        return _to_data_uri(fig)


def experts_plot(tokens: list[int], by_layer: list[list[int]] | None = None) -> str:
    """Routed tokens per expert over the run; with per-layer counts, one bar group per layer."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        names = [f"expert {i}" for i in range(len(tokens))]
        if by_layer and len(by_layer) > 1:
            _bars(ax, names, {f"layer {i}": list(map(float, row)) for i, row in enumerate(by_layer)}, fmt="{:.0f}")
        else:
            _bars(ax, names, {"all layers": list(map(float, tokens))}, fmt="{:.0f}")
        plotted = by_layer if by_layer and len(by_layer) > 1 else [tokens]
        even = sum(map(sum, plotted)) / max(sum(map(len, plotted)), 1)
        ax.axhline(even, color="grey", linestyle="--", linewidth=1, label="even load")
        ax.set_ylabel("routed tokens")
        ax.set_title("Tokens per expert (router load)")
        _legend_outside(ax)
        return _to_data_uri(fig)


def eval_plot(
    domains: list[str], perplexity: dict[str, list[float | None]], suites: dict[str, Any]
) -> str:
    """Held-out perplexity per domain and KPI suite scores, this version against the previous.

    `suites`: {"names": [...], "scores": {label: [score per name]}, "thresholds": [...]}.
    """
    panels = 2 if suites.get("names") else 1
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels + 2, 3.8), squeeze=False)
        ax = axes[0][0]
        _bars(ax, domains, perplexity)
        ax.set_ylabel("perplexity (lower is better)")
        ax.set_title("Held-out perplexity per domain")
        if panels == 2:
            ax = axes[0][1]
            _bars(ax, suites["names"], suites["scores"], fmt="{:.2f}")
            for i, threshold in enumerate(suites.get("thresholds", [])):
                if threshold is not None:
                    ax.hlines(threshold, i - 0.45, i + 0.45, colors="red", linestyles="--", linewidth=1)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("score (red: threshold)")
            ax.set_title("KPI suites")
        return _to_data_uri(fig)


def rl_plot(steps: list[int], reward: list[float], kl: list[float], length: list[float]) -> str:
    """GRPO's curves over steps: mean reward, KL to the reference, mean completion length."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for ax, values, label in zip(axes, (reward, kl, length),
                                     ("mean reward", "KL to the reference (k3)", "completion length (tokens)"),
                                     strict=True):
            ax.plot(steps, values, color="black", linewidth=1.5)
            ax.set_xlabel("optimizer step")
            ax.set_title(label)
        return _to_data_uri(fig)

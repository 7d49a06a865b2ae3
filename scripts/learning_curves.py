"""Learning curves of gate-training runs from their metrics.jsonl: the distillation loss, the sparsity that
ran (against the target) and the dev quality at each evaluation, against steps, one line per run. A run
continued from a trained set (`start_from`) is drawn after that set's own run (its
start_from_metrics.jsonl), so the steps are counted from the start of training.

Usage: python scripts/learning_curves.py RUN_DIR... --out results/issue15_gpu/learning_curves.png
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ctxprune.train.run import training_history  # noqa: E402


def smooth(values: list[float], window: int = 5) -> list[float]:
    return [statistics.mean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def curves(run: Path) -> dict:
    rows = training_history(str(run))  # the run's own log after every earlier run's
    steps = [r for r in rows if "loss" in r]
    dev = [r for r in rows if "dev" in r]
    prefix = next(k for k in steps[0] if k.startswith("sampled_s_"))

    def mean_of(metric: str, r: dict) -> float | None:
        values = [g[metric] for g in r["dev"].values() if metric in g]
        return statistics.mean(values) if values else None

    return {
        "step": [r["step"] for r in steps],
        # the KL term alone where it is logged: a run that distills hidden states too adds that term to
        # task_loss, which would not compare with runs that do not
        "distill": smooth([r.get("kl", r["task_loss"]) for r in steps]),
        "sparsity": smooth([r[prefix] for r in steps]),
        "target": [r["target"] for r in steps],
        "dev_step": [r["step"] for r in dev],
        "wer": [mean_of("wer", r) for r in dev],
        "bleu": [mean_of("bleu", r) for r in dev],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "metrics.jsonl").is_file():
            parser.error(f"{run} is not a training run: it has no metrics.jsonl (pass run directories)")
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for run in args.runs:
        c = curves(run)
        line = axes[0].plot(c["step"], c["distill"], label=run.name)[0]
        axes[1].plot(c["step"], c["sparsity"], color=line.get_color())
        axes[1].plot(c["step"], c["target"], color=line.get_color(), linestyle=":", linewidth=0.8)
        axes[2].plot(c["dev_step"], c["wer"], marker="o", color=line.get_color())
        axes[3].plot(c["dev_step"], c["bleu"], marker="o", color=line.get_color())
    titles = [
        "distillation loss (KL, T=2; smoothed)",
        "sparsity that ran: the encoder's if gated, else the decoder's (dotted: target)",
        "dev WER, mean of 5 languages",
        "dev BLEU, mean of 4 directions",
    ]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (64 utterances each)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""The mountaincar-language study's report: report.md, curves.png and behaviour.png, from results.json's data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def write_language_report(out: Path, results: dict, agents: dict) -> Path:
    from understudy.eval.plots import plot_runs

    args, rm, behaviour = results["args"], results["reward_model"], results["behaviour"]
    categories = list(next(iter(behaviour.values()))[0]["rates"])
    target = {f"sentence-{k}": k for k in results["sentences"]}
    lines = [
        "# Language-grounded rewards on MountainCar (note 000)", "",
        f"Made by `understudy study mountaincar-language --out {args['out']}` "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in args.items()
                   if k not in ("out", "progress") and not isinstance(v, bool)) + ".", "",
        "## Reward model", "",
        f"Corpus: {sum(results['corpus_category_counts'].values())} episodes "
        f"({', '.join(f'{c}: {n}' for c, n in results['corpus_category_counts'].items())}); "
        f"{rm['test_episodes']} held out. Trained {rm['steps']} updates in {rm['train_time_s']:.0f} s.", "",
        "| evaluated on | sentences | pairwise accuracy | category accuracy |", "|---|---|---|---|",
    ]
    for key, label in (("held_out", "held-out episodes, held-out paraphrases"),
                       ("train_sentences", "held-out episodes, training sentences")):
        if key in rm:
            r = rm[key]
            lines.append(f"| {label} | {r['sentences']} | **{r['pairwise_accuracy']:.3f}** ({r['triples']} triples) "
                         f"| {r['category_accuracy']:.3f} |")
    lines += ["", "Pairwise accuracy: the share of (trajectory, s+, s−) triples, s+ describing the trajectory's "
              "category and s− another, where r(τ, s+) > r(τ, s−).", "",
              "## Agents trained only on a sentence's score", "",
              f"{args['algo'].upper()}, {args['rl_steps']} environment steps, {args['seeds']} seed(s); behaviour of "
              f"the final policy over {args['eval_episodes']} episodes (deterministic), captioned by the same rules "
              "as the corpus. Success = the environment's own goal (position ≥ 0.5).", "",
              "| agent | reward | in its target category | " + " | ".join(categories) + " | success | env return |",
              "|---|---|---|" + "---|" * len(categories) + "---|---|"]
    for name, per_seed in behaviour.items():
        rates = {c: float(np.mean([s["rates"][c] for s in per_seed])) for c in categories}
        success = float(np.mean([s["success_rate"] for s in per_seed]))
        ret = float(np.mean([s["env_return_mean"] for s in per_seed]))
        reward = f"sentence: \"{agents[name]}\"" if agents.get(name) else "environment reward"
        in_target = f"**{_pct(rates[target[name]])}**" if name in target else "–"
        seeds_note = ""
        if len(per_seed) > 1 and name in target:
            seeds_note = " (per seed: " + ", ".join(_pct(s["rates"][target[name]]) for s in per_seed) + ")"
        lines.append(f"| {name} | {reward} | {in_target}{seeds_note} | "
                     + " | ".join(_pct(rates[c]) for c in categories) + f" | {_pct(success)} | {ret:.1f} |")
    run_dirs = [str(out / "agents" / name) for name in behaviour]
    try:
        plot_runs(run_dirs, str(out / "curves.png"),
                  title="MountainCar-v0: environment return (20-episode evaluations)")
        lines += ["", "## Learning curves", "", "![curves](curves.png)", "",
                  "Environment return of 20 evaluation episodes during training; the sentence agents never see it."]
    except Exception as e:  # noqa: BLE001  (a plot must not lose the report)
        lines += ["", f"(learning-curve plot failed: {e})"]
    _behaviour_plot(out / "behaviour.png", behaviour, categories)
    lines += ["", "![behaviour](behaviour.png)", "", "## Time", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results["timings_s"].items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _behaviour_plot(path: Path, behaviour: dict, categories: list[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = list(behaviour)
    left = np.zeros(len(names))
    for c in categories:
        share = np.array([np.mean([s["rates"][c] for s in behaviour[n]]) for n in names])
        ax.barh(names, share, left=left, label=c)
        left += share
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of evaluation episodes")
    ax.legend(title="behaviour", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("What each agent does (final policy)")
    fig.tight_layout()
    fig.savefig(path)

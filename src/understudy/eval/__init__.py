"""Evaluation: rollouts of policies, statistics (normalized score, IQM with CIs), markdown reports and plots.

Kept import-free so that `import understudy.eval.stats` does not pull in environments or matplotlib;
import the submodule you need: `understudy.eval.stats`, `understudy.eval.report`, `understudy.eval.plots`.
"""

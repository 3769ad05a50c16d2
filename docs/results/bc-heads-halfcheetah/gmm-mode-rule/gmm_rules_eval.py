"""Probe (session 20): evaluate GMM BC exports with both deterministic-action rules on the same episodes.
Usage: python gmm_rules_eval.py ENV_ID EXPERT_DIR EXPORT... ; prints one JSON line per export and rule."""
import dataclasses, json, sys
import numpy as np
from understudy.eval.rollouts import evaluate_policy
from understudy.policy import Policy, load_policy

env_id, expert_dir, exports = sys.argv[1], sys.argv[2], sys.argv[3:]
ref = json.load(open(f"{expert_dir}/expert.json"))
random_return, expert_return = ref["random_return"], ref["mean"]
for path in exports:
    loaded = load_policy(path)
    for rule in ("top-component", "mixture-mean"):
        config = dict(loaded.head_config)
        if config["name"] == "ensemble":
            config["member_options"] = tuple((k, rule if k == "mode_rule" else v) for k, v in config["member_options"])
        else:
            config["mode_rule"] = rule
        policy = Policy(config, loaded.params, loaded.spec, None if loaded.normalizer is None else
                        {k: np.asarray(v) for k, v in loaded.normalizer.items()})
        returns = np.asarray(evaluate_policy(policy, env_id, episodes=100, seed=12345)["returns"])
        print(json.dumps({"export": path, "rule": rule, "mean": round(float(returns.mean()), 1),
                          "std": round(float(returns.std()), 1), "min": round(float(returns.min()), 1),
                          "normalized": round(float((returns.mean() - random_return) / (expert_return - random_return)), 4)}),
              flush=True)

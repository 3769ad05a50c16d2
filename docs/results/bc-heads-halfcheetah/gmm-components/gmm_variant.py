"""Session 19 probe: run `understudy ...` with the "gmm" head replaced by a patched subclass. VARIANT (comma list):
detach_scale: the log-std and logit layers read stop_gradient(torso features), so only the means train the torso.
mixture_mean: act with the mixture's weighted mean instead of the most probable component's mean."""
import os
import sys

import jax
import jax.numpy as jnp

from understudy.nets import heads
from understudy.nets.heads import gmm
from understudy.nets.heads.gaussian import bounded_log_std

variants = set(filter(None, os.environ.get("VARIANT", "").split(",")))
print("GMM variants:", sorted(variants), flush=True)


class PatchedGMM(gmm.GMMHead):
    def __call__(self, obs):
        if "detach_scale" not in variants:
            return super().__call__(obs)
        h = self.torso(obs)
        shape = h.shape[:-1] + (self.num_components, self.action_dim)
        means = self.means_layer(h).reshape(shape)
        hs = jax.lax.stop_gradient(h)
        log_stds = bounded_log_std(self.log_stds_layer(hs).reshape(shape), self.log_std_min, self.log_std_max)
        return self.logits_layer(hs), means, log_stds

    def mode(self, obs):
        if "mixture_mean" not in variants:
            return super().mode(obs)
        logits, means, _ = self(obs)
        return jnp.clip(jnp.sum(jax.nn.softmax(logits, -1)[..., None] * means, axis=-2), -1.0, 1.0)


heads.HEADS["gmm"] = PatchedGMM
from understudy.cli import main  # noqa: E402
sys.exit(main(sys.argv[1:]))

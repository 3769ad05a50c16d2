"""Session 19, usage: python gmm_diag.py DATASET POLICY_EXPORT... ; how a trained GMM head splits the HalfCheetah expert states between its components."""
import sys
import jax
import jax.numpy as jnp
import numpy as np
from understudy.data.storage import load_dataset
from understudy.policy import load_policy, normalize, from_env_action

ds = load_dataset(sys.argv[1])
for path in sys.argv[2:]:
    pol = load_policy(path)
    obs = jnp.asarray(ds.observations, jnp.float32)
    logits, means, log_stds = pol.module.apply(pol.params, normalize(obs, pol.normalizer))
    w = np.asarray(jax.nn.softmax(logits, -1)); means = np.asarray(means); std = np.exp(np.asarray(log_stds))
    k = w.argmax(-1)
    act = np.asarray(from_env_action(ds.actions, pol.spec))
    pick = means[np.arange(len(k)), k]
    mix = (w[..., None] * means).sum(1)
    # consecutive steps within episodes
    same_ep = np.ones(len(k) - 1, bool)
    ends = np.asarray(ds.episode_ends)[:-1] - 1
    same_ep[np.asarray(ends, int)] = False
    switches = (k[1:] != k[:-1])[same_ep].mean()
    print(path)
    print(f"  components used (share of states as argmax): {np.bincount(k, minlength=w.shape[1]) / len(k)}")
    print(f"  mean max weight {w.max(-1).mean():.3f}; argmax switches between consecutive steps {switches:.3f}")
    print(f"  mse argmax-mean {np.mean((np.clip(pick,-1,1)-act)**2):.4f}, mixture-mean {np.mean((np.clip(mix,-1,1)-act)**2):.4f}")
    print(f"  std of the argmax component: median {np.median(std[np.arange(len(k)), k]):.4f}, 90% {np.quantile(std[np.arange(len(k)), k], .9):.4f}")
    per_comp = np.mean((np.clip(means, -1, 1) - act[:, None, :]) ** 2, axis=(0, 2))
    uni = np.clip(means.mean(1), -1, 1)
    print(f"  each component's mean vs the data's action on all states (mse): {np.round(per_comp, 4)}; "
          f"uniform average of the means: {np.mean((uni - act) ** 2):.4f}")

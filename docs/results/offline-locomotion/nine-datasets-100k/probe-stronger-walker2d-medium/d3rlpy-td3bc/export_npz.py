"""Writes an understudy dataset's flat columns to an .npz (plain arrays, no pickle) for the d3rlpy check."""
import sys
import numpy as np
from understudy.data.storage import load_dataset

ds = load_dataset(sys.argv[1])
np.savez(sys.argv[2], observations=ds.observations.astype(np.float32), actions=ds.actions.astype(np.float32),
         rewards=ds.rewards.astype(np.float32), terminals=ds.terminations.astype(np.float32),
         timeouts=ds.truncations.astype(np.float32),
         refs=np.array([ds.metadata["ref_min_score"], ds.metadata["ref_max_score"]], np.float64))
print("wrote", sys.argv[2], ds.num_steps, "steps,", ds.num_episodes, "episodes")

"""Datasets: flat columns with episode boundaries, Minari / D4RL storage, validation, summaries, collection.

    from understudy.data import collect, save_dataset, load_dataset, dataset_info, format_info
    ds = collect("Pendulum-v1", "random", episodes=10)
    save_dataset(ds, "data/pendulum-random")
    ds = load_dataset("data/pendulum-random")   # also minari dataset ids and D4RL-style .hdf5 files
    print(format_info(dataset_info(ds)))
"""

from understudy.data.collect import collect
from understudy.data.episodes import Dataset, mix_datasets, train_val_split
from understudy.data.info import dataset_info, format_info
from understudy.data.storage import load_dataset, locate_dataset, save_dataset
from understudy.data.validate import check_compatible, validate_dataset

__all__ = ["Dataset", "mix_datasets", "train_val_split", "save_dataset", "load_dataset", "locate_dataset",
           "validate_dataset", "check_compatible", "dataset_info", "format_info", "collect"]

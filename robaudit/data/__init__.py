"""Datasets: npz, npy pairs, image folders and bundled MNIST, streamed in batches as [0, 1] NCHW."""

from robaudit.data.dataset import Dataset, open_dataset, stratified_subset

__all__ = ["Dataset", "open_dataset", "stratified_subset"]

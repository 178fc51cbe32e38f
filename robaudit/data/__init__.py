"""Datasets: npz, npy pairs, image folders and bundled MNIST, streamed in batches as [0, 1] NCHW."""

from robaudit.data.dataset import MNIST_NAME, MNIST_SHAPE, Dataset, stratified_subset
from robaudit.data.loading import open_dataset
from robaudit.data.mnist import open_mnist

__all__ = ["MNIST_NAME", "MNIST_SHAPE", "Dataset", "open_dataset", "open_mnist", "stratified_subset"]

"""Shared fixtures: a tiny generated shapes dataset (helpers live in ``tests/helpers``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dat_det.datasets import ShapesConfig, generate_shapes_dataset


@pytest.fixture(scope='session')
def tiny_shapes_root(tmp_path_factory) -> Path:
    """A generated shapes dataset with 8 train and 4 val images of 64-96 px."""
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(root, ShapesConfig(num_train=8, num_val=4, min_size=64, max_size=96,
                                               min_object=16, max_object=40, seed=1))
    return root

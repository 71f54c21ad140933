import os

import numpy as np
import pytest
import torch

from fvq.core.data import FASHION_DIR, build_dataset, epoch_permutation


@pytest.fixture(scope="module")
def photos_train():
    return build_dataset("photos", "train", 32, seed=3, n=64)


def test_train_is_pure_function_of_seed_epoch_index(photos_train):
    ds = photos_train
    ds.set_epoch(2)
    a = ds[5]
    other = build_dataset("photos", "train", 32, seed=3, n=64)  # fresh object: like a resumed run / worker
    other.set_epoch(7)
    other[5]
    other.set_epoch(2)
    assert torch.equal(a, other[5])
    ds.set_epoch(3)
    assert not torch.equal(a, ds[5])
    ds.set_epoch(2)
    assert not torch.equal(a, build_dataset("photos", "train", 32, seed=4, n=64).__getitem__(5))


def test_shapes_and_range(photos_train):
    assert len(photos_train) == 64
    for i in range(8):
        x = photos_train[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
    val = build_dataset("photos", "val", 16, n=10)
    assert len(val) == 10 and val[0].shape == (3, 16, 16)
    assert len(build_dataset("photos", "val", 16)) == 256


def test_val_fixed_across_epochs_and_instances():
    v1 = build_dataset("photos", "val", 32, seed=1, n=12)
    v2 = build_dataset("photos", "val", 32, seed=1, n=12)
    v2.set_epoch(5)
    assert all(torch.equal(v1[i], v2[i]) for i in range(12))
    assert isinstance(v1.cache_key, str) and "photos" in v1.cache_key


def test_epoch_permutation():
    p = epoch_permutation(10, 0, 1)
    assert p.dtype == torch.long and sorted(p.tolist()) == list(range(10))
    assert torch.equal(p, epoch_permutation(10, 0, 1))
    assert not torch.equal(epoch_permutation(100, 0, 1), epoch_permutation(100, 0, 2))


def _write_folder(root, n=3, sizes=((40, 30), (64, 48), (35, 50))):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        d = root / split / "cls"
        d.mkdir(parents=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"im{i}.png")


def test_imagefolder(tmp_path):
    _write_folder(tmp_path)
    tr = build_dataset("imagefolder", "train", 24, path=str(tmp_path), seed=0)
    va = build_dataset("imagefolder", "val", 24, path=str(tmp_path))
    assert len(tr) == 3 and len(va) == 3
    for ds in (tr, va):
        x = ds[1]
        assert x.shape == (3, 24, 24) and x.min() >= -1 and x.max() <= 1
    tr.set_epoch(1)
    a = tr[0]
    tr.set_epoch(0)
    tr[0]
    tr.set_epoch(1)
    assert torch.equal(a, tr[0])
    assert torch.equal(va[2], va[2])
    adm = build_dataset("imagefolder", "val", 24, path=str(tmp_path), protocol="llamagen")
    assert adm[1].shape == (3, 24, 24)


def test_imagefolder_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset("imagefolder", "val", 32, path=str(tmp_path / "nope"))


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")),
                    reason="dataset-fashion-mnist not installed (make datasets)")
def test_fashion_mnist():
    ds = build_dataset("fashion_mnist", "val", 32, n=5)
    assert len(ds) == 5
    x = ds[0]
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[0], x[1])
    # the official test set's first labels (ankle boot, pullover, trouser, trouser, shirt): the generator's classes
    assert ds.num_classes == 10 and [ds.label(i) for i in range(5)] == [9, 2, 1, 1, 6]


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="make datasets"):
        build_dataset("fashion_mnist", "val", 32, path=str(tmp_path))

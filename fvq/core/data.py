"""Image datasets for FVQ: items are (3, H, W) float32 tensors in [-1, 1].

``build_dataset(source, split, image_size, *, path=None, seed=0, n=None, train=None, protocol="fvq")``

Sources
- ``photos``: scikit-image's bundled photos that load offline (CC0 / public domain). Each photo is first
  resized so its short side is ``BASE_SHORT`` (128) px (the "base scale"; enlarged further when needed so
  that the val territory is at least ``image_size`` wide and tall). Split with no overlap: the left 80 % of
  each image's columns is train territory, the right 20 % val territory (the boundary column is rounded
  down; crops never cross it). Train: ``n`` (default 4096) random crops per epoch; per item a random
  image, a random scale in [0.5, 1] of the base size (never below ``image_size`` on the short side), a
  random ``image_size`` crop inside the train territory and a random horizontal flip. Val: ``n`` (default
  256) fixed crops from the val territory at the base scale, positions drawn with a generator seeded by
  ``seed`` only (the same whatever the epoch).
- ``fashion_mnist``: Debian ``dataset-fashion-mnist`` (``make datasets``); train/val = the official
  train/test sets, first ``n``; grey -> 3 channels; bilinear resize (antialias) to ``image_size``. No
  augmentation.
- ``imagefolder``: ``path/train/**`` and ``path/val/**`` (*.jpg, *.jpeg, *.png, any case); when those
  sub-folders are absent the folder itself is the split (both splits then read the same files). Train
  (LlamaGen-like): resize the short side to ``image_size * U(1, 1.1)`` (bicubic), random ``image_size``
  crop, random horizontal flip. Val: resize the short side to ``image_size`` (bicubic), centre crop.
  ``protocol="llamagen"`` switches the val transform to ADM's centre crop (BOX halving while the short
  side >= 2 * size, BICUBIC to size, centre crop), ``protocol="official"`` to a centre crop with no resize
  (fvq/core/protocol_presets.py). For the built-in sources (photos, fashion_mnist) the crops of every
  protocol coincide.

Determinism: train augmentation is a pure function of (seed, epoch, index): every item seeds its own
``torch.Generator`` from those three ints, so resume and any number of DataLoader workers see identical
images. ``set_epoch(epoch)`` selects the epoch. Every dataset has a ``cache_key`` string (source, split,
size, n, seed, protocol) used to key FID reference statistics.
"""
from __future__ import annotations

import glob
import gzip
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

BASE_SHORT = 128
TRAIN_FRACTION = 0.8
PHOTO_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "horse",
    "hubble_deep_field", "immunohistochemistry", "motorcycle_left", "motorcycle_right", "retina", "cat",
    "grass", "gravel", "brick", "colorwheel", "logo", "clock", "microaneurysms", "eagle",
    "cell", "human_mitosis", "kidney", "lily", "skin",
)
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

_PHOTOS: list[tuple[str, np.ndarray]] | None = None  # module-level cache of loaded photos (uint8 HxWx3)
_FASHION: dict[str, np.ndarray] = {}


def _mix(*ints: int) -> int:
    """A 63-bit seed from several ints (splitmix-style), so (seed, epoch, index) never collide trivially."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(_mix(seed, epoch, index))


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the n training items in one epoch: a LongTensor permutation seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(_mix(seed, epoch, -1))
    return torch.randperm(n, generator=g)


def _to_rgb_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo + 1e-12) * 255).round().astype(np.uint8) if hi > 1.0 or lo < 0.0 else \
            (a * 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"unsupported image shape {a.shape}")
    return np.ascontiguousarray(a)


def load_photos() -> list[tuple[str, np.ndarray]]:
    """scikit-image photos that load offline, as (name, uint8 HxWx3); cached per process."""
    global _PHOTOS
    if _PHOTOS is None:
        import skimage.data

        out = []
        for name in PHOTO_NAMES:
            fn = getattr(skimage.data, name, None)
            if fn is None:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a = fn()
                if isinstance(a, tuple):
                    a = a[0]
                a = np.asarray(a)
                if a.ndim not in (2, 3) or min(a.shape[:2]) < 64:
                    continue
                out.append((name, _to_rgb_uint8(a)))
            except Exception:  # a photo that needs a network fetch, an odd format: the others suffice
                continue
            except BaseException as e:  # under pytest, skimage skips a test whose photo needs a download
                if not any(c.__module__ == "_pytest.outcomes" for c in type(e).__mro__):  # ^C, exit: not ours
                    raise
                continue
        if not out:
            raise FileNotFoundError("no scikit-image bundled photo could be loaded (is scikit-image installed?)")
        _PHOTOS = out
    return _PHOTOS


def _resize(x: torch.Tensor, h: int, w: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize a (3,H,W) float tensor (antialiased when shrinking)."""
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x[None], size=(h, w), mode=mode, align_corners=False, antialias=True)[0]


class _Base(torch.utils.data.Dataset):
    source = "?"

    def __init__(self, split: str, image_size: int, n: int | None, seed: int, train: bool, protocol: str):
        self.split, self.image_size, self.seed, self.train, self.protocol = split, int(image_size), int(seed), \
            bool(train), protocol
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def cache_key(self) -> str:
        return (f"{self.source}|split={self.split}|size={self.image_size}|n={len(self)}|seed={self.seed}"
                f"|train={self.train}|protocol={self.protocol}")

    def __len__(self) -> int:
        return self.n


class PhotoCrops(_Base):
    """Random (train) or fixed (val) crops of scikit-image's bundled photos; see the module docstring."""
    source = "photos"

    def __init__(self, split, image_size, n=None, seed=0, train=None, protocol="fvq"):
        train = split == "train" if train is None else train
        super().__init__(split, image_size, n if n is not None else (4096 if train else 256), seed, train, protocol)
        s = self.image_size
        self.bases: list[tuple[torch.Tensor, int]] = []  # (image at base scale in [0,1], split column)
        for _, a in load_photos():
            x = torch.from_numpy(a).permute(2, 0, 1).float().div(255)
            h, w = x.shape[-2:]
            f = max(BASE_SHORT / min(h, w), s / min(h, (1 - TRAIN_FRACTION) * w))
            x = _resize(x, max(s, int(np.ceil(h * f))), int(np.ceil(w * f)))
            cut = int(x.shape[-1] * TRAIN_FRACTION)
            self.bases.append((x, cut))
        if not train:  # fixed crops, seeded by `seed` only
            g = torch.Generator().manual_seed(_mix(self.seed, 0x7A1))
            self.val_spec = []
            for _ in range(self.n):
                k = int(torch.randint(len(self.bases), (1,), generator=g))
                x, cut = self.bases[k]
                h, w = x.shape[-2:]
                top = int(torch.randint(h - s + 1, (1,), generator=g))
                left = cut + int(torch.randint(max(1, w - cut - s + 1), (1,), generator=g))
                self.val_spec.append((k, top, min(left, w - s)))

    @property
    def num_classes(self) -> int:
        return len(self.bases)

    def label(self, i: int) -> int:
        """The source photo of crop i: the class of the cpu-scale class-conditional generator (Table 2's
        cpu stand-in for ImageNet's 1,000 classes). The same draw as ``__getitem__``'s first."""
        if not self.train:
            return self.val_spec[i][0]
        return int(torch.randint(len(self.bases), (1,), generator=item_generator(self.seed, self.epoch, i)))

    def __getitem__(self, i: int) -> torch.Tensor:
        s = self.image_size
        if not self.train:
            k, top, left = self.val_spec[i]
            x = self.bases[k][0][:, top:top + s, left:left + s]
            return x.mul(2).sub(1).contiguous()
        g = item_generator(self.seed, self.epoch, i)
        k = int(torch.randint(len(self.bases), (1,), generator=g))
        scale = 0.5 + 0.5 * float(torch.rand((), generator=g))
        flip = bool(torch.rand((), generator=g) < 0.5)
        x, cut = self.bases[k]
        h, w = x.shape[-2:]
        # the train territory only, then scaled; short side of the territory never below s
        terr = x[:, :, :cut]
        th, tw = terr.shape[-2:]
        f = max(scale, s / min(th, tw))
        terr = _resize(terr, max(s, round(th * f)), max(s, round(tw * f)))
        th, tw = terr.shape[-2:]
        top = int(torch.randint(th - s + 1, (1,), generator=g))
        left = int(torch.randint(tw - s + 1, (1,), generator=g))
        out = terr[:, top:top + s, left:left + s]
        if flip:
            out = out.flip(-1)
        return out.mul(2).sub(1).contiguous()


def _read_idx_images(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX image file (magic {magic})")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w)


def _read_idx_labels(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 8, 4))
    if magic != 2049:
        raise ValueError(f"{path}: not an IDX label file (magic {magic})")
    return np.frombuffer(data, np.uint8, offset=8)[:n]


class FashionMNIST(_Base):
    """Debian's Fashion-MNIST: train = official train set, val = official test set, first n images."""
    source = "fashion_mnist"

    def __init__(self, split, image_size, n=None, seed=0, train=None, protocol="fvq", root=None):
        train = split == "train" if train is None else train
        root = root or FASHION_DIR
        fname = "train-images-idx3-ubyte.gz" if split == "train" else "t10k-images-idx3-ubyte.gz"
        path = os.path.join(root, fname)
        if path not in _FASHION:
            if not os.path.exists(path):
                raise FileNotFoundError(f"Fashion-MNIST not found at {path}: run `make datasets` "
                                        "(apt-get install dataset-fashion-mnist)")
            _FASHION[path] = _read_idx_images(path)
        self.images = _FASHION[path]
        self.labels_path = path.replace("images-idx3", "labels-idx1")
        total = len(self.images)
        super().__init__(split, image_size, min(n, total) if n else total, seed, train, protocol)

    @property
    def num_classes(self) -> int:
        return 10

    def label(self, i: int) -> int:
        """The garment class of image i (0-9; the generator's classes at cpu scale on this source)."""
        if self.labels_path not in _FASHION:
            if not os.path.exists(self.labels_path):
                raise FileNotFoundError(f"Fashion-MNIST labels not found at {self.labels_path}: run `make datasets`")
            _FASHION[self.labels_path] = _read_idx_labels(self.labels_path)
        return int(_FASHION[self.labels_path][i])

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(self.images[i].astype(np.float32) / 255)[None].expand(3, -1, -1)
        s = self.image_size
        x = _resize(x.contiguous(), s, s)
        return x.clamp(0, 1).mul(2).sub(1).contiguous()


class ImageFolder(_Base):
    """Images under ``path/<split>/**`` (or ``path/**`` when there is no split folder); see module docstring."""
    source = "imagefolder"

    def __init__(self, path, split, image_size, n=None, seed=0, train=None, protocol="fvq"):
        train = split == "train" if train is None else train
        if not path or not os.path.isdir(path):
            raise FileNotFoundError(f"dataset path {path} does not exist (data.path={path!r})")
        root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
        files = sorted(f for f in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                       if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"no .jpg/.jpeg/.png images under {root} (data.path={path!r})")
        self.files = files[:n] if n else files
        self.root = root
        super().__init__(split, image_size, len(self.files), seed, train, protocol)

    @property
    def cache_key(self) -> str:
        return super().cache_key + f"|root={os.path.abspath(self.root)}"

    def _class_of(self, f: str) -> str:
        return os.path.relpath(f, self.root).split(os.sep)[0] if os.sep in os.path.relpath(f, self.root) else ""

    @property
    def num_classes(self) -> int:
        return len({self._class_of(f) for f in self.files})

    def label(self, i: int) -> int:
        """The class of image i: its top-level folder under the split (ImageNet's synset folders), in sorted
        order; a flat folder is one class."""
        if not hasattr(self, "_classes"):
            self._classes = {c: k for k, c in enumerate(sorted({self._class_of(f) for f in self.files}))}
        return self._classes[self._class_of(self.files[i])]

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        s = self.image_size
        try:
            with Image.open(self.files[i]) as im:
                img = im.convert("RGB")
        except OSError as e:  # truncated / not an image: name the file, not just PIL's complaint
            raise OSError(f"cannot read image {self.files[i]}: {e}") from None
        if self.train:
            g = item_generator(self.seed, self.epoch, i)
            short = int(round(s * (1 + 0.1 * float(torch.rand((), generator=g)))))
            scale = short / min(img.size)
            w, h = max(short, round(img.width * scale)), max(short, round(img.height * scale))
            arr = np.array(img.resize((w, h), resample=Image.BICUBIC))
            top = int(torch.randint(h - s + 1, (1,), generator=g))
            left = int(torch.randint(w - s + 1, (1,), generator=g))
            arr = arr[top:top + s, left:left + s]
            if bool(torch.rand((), generator=g) < 0.5):
                arr = arr[:, ::-1]
        else:
            from fvq.core.protocol_presets import PRESETS, val_crop

            arr = val_crop(img, s, PRESETS[self.protocol].crop)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div(255)
        return x.mul(2).sub(1).contiguous()


def build_dataset(source: str, split: str, image_size: int, *, path: str | None = None, seed: int = 0,
                  n: int | None = None, train: bool | None = None, protocol: str = "fvq"):
    """A dataset of (3, image_size, image_size) float32 images in [-1, 1]; see the module docstring."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    from fvq.core.protocol_presets import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if source == "photos":
        return PhotoCrops(split, image_size, n=n, seed=seed, train=train, protocol=protocol)
    if source == "fashion_mnist":
        return FashionMNIST(split, image_size, n=n, seed=seed, train=train, protocol=protocol,
                            root=path or None)
    if source == "imagefolder":
        return ImageFolder(path, split, image_size, n=n, seed=seed, train=train, protocol=protocol)
    raise ValueError(f"unknown data source {source!r} (photos, fashion_mnist, imagefolder)")

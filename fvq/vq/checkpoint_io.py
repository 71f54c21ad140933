"""Weights in and out: LlamaGen-format VQ models (the format of FVQ's released tokenizers) and fvq checkpoints.

FVQ's README ("Eval FVQ", yfChang-cv/FVQ README.md:61) releases its models "in VQGAN format": a LlamaGen
``VQModel.state_dict()`` whose ``quantize.embedding.weight`` is the codebook already projected by VQBridge
(tokenizer/tokenizer_image/convert_fullvq2vq.py:230-231), the ``quantize.qbridge.*`` weights dropped (:235-238),
saved as ``{"model": state_dict}`` (:246). Such a file loads onto our ``VQModel`` with a projector-free
quantizer (``quant.projector=none``): its codebook is f(C), not C, so a projector would map it a second time.

Files. ``torch.load(weights_only=True)``, with ``argparse.Namespace`` allowed: LlamaGen's training checkpoints
keep their ``args`` (LlamaGen tokenizer/tokenizer_image/vq_train.py:245-254). The weights are taken from the
first of ``ema``, ``model``, ``state_dict`` the file holds, the order of LlamaGen's and FVQ's evaluation scripts
(LlamaGen tokenizer/tokenizer_image/reconstruction_vq_ddp.py:64-69, FVQ eval_fid_vqgan.py:185-190), or the
file is the state dict itself. Our own ``ckpt.pt`` keeps its weights under ``model`` too.

Key rules, LlamaGen name -> fvq name (LlamaGen tokenizer/tokenizer_image/vq_model.py at ce98ec4):

| LlamaGen key (vq_model.py line)                                   | fvq key (fvq/vq/models.py)               |
| ----------------------------------------------------------------- | ---------------------------------------- |
| quantize.embedding.weight (207: an nn.Embedding)                  | quantizer.embedding (K, d)               |
| quantize.codebook_used (211-212: a usage buffer of 65,536)        | dropped                                  |
| quant_conv.*, post_quant_conv.* (38-39)                           | same                                     |
| encoder.conv_in / norm_out / conv_out (70, 101-102)               | same                                     |
| decoder.conv_in / norm_out / conv_out (137, 166-167)              | same                                     |
| encoder.conv_blocks.{i}.res.{j} (83), .attn.{j} (86)              | encoder.body.{n}                         |
| encoder.conv_blocks.{i}.downsample (91), encoder.mid.{0,1,2} (95-98) | encoder.body.{n}                      |
| decoder.mid.{0,1,2} (140-143)                                     | decoder.body.{0,1,2}                     |
| decoder.conv_blocks.{i}.res.{j} (154), .attn.{j} (157), .upsample (162) | decoder.body.{n}                   |
| ResnetBlock norm1 / conv1 / norm2 / conv2 (287-291)               | same                                     |
| ResnetBlock nin_shortcut (297; only when in != out)               | skip                                     |
| AttnBlock norm (320), proj_out (324)                              | norm, proj                               |
| AttnBlock q, k, v (321-323): each (c, c, 1, 1) and (c,)           | qkv: q, k, v stacked on dim 0 (3c, ...)  |
| Downsample conv (387), Upsample conv (372)                        | conv                                     |

``n`` is a block's place in our flat ``body``: LlamaGen's loops walked in their order. Encoder: levels
i = 0.., ``num_res_blocks`` res blocks each, an attention after each res block of the last level, a downsample
after every level but the last, then the middle (res, attn, res). Decoder: the middle first, then
``conv_blocks`` i = 0.. (level ``len(ch_mult) - 1 - i``, vq_model.py:147), ``num_res_blocks + 1`` res blocks, an
attention after each in the first, an upsample after every one but the last. GroupNorm's group count holds
no weights (LlamaGen: 32, vq_model.py:362; our cpu archs: 4), so the rules map any ``ArchSpec``.

Every key is checked: a file key that no rule maps, a key the model needs that the file lacks, a shape
that differs (another architecture, codebook size or code dimension), or an unreadable file is one
``CheckpointError`` line naming the first offending key (in the file's order) or the file.
"""
from __future__ import annotations

import argparse
import os
import re

import torch
from torch import nn

from fvq.core.checkpoint import CheckpointError
from fvq.core.errors import one_line
from fvq.vq.models import ArchSpec
from fvq.vq.quantize import VectorQuantizer

FORMATS = ("llamagen", "fvq")
DROPPED = ("quantize.codebook_used",)  # LlamaGen's usage buffer (vq_model.py:211-212): no weight
USAGE_SLOTS = 65536                    # its length, so LlamaGen's strict load_state_dict takes what we write
WRAPPERS = ("ema", "model", "state_dict")  # first present wins (reconstruction_vq_ddp.py:64-69)
_LEAF = {"skip": "nin_shortcut", "proj": "proj_out"}  # our leaf module name -> LlamaGen's, inside a block


def _encoder_blocks(a: ArchSpec) -> list[str]:
    """LlamaGen's name of each block of our ``encoder.body``, by index (vq_model.py:75-98)."""
    last, out = len(a.ch_mult) - 1, []
    for i in range(len(a.ch_mult)):
        for j in range(a.num_res_blocks):
            out.append(f"conv_blocks.{i}.res.{j}")
            if i == last:
                out.append(f"conv_blocks.{i}.attn.{j}")
        if i != last:
            out.append(f"conv_blocks.{i}.downsample")
    return out + ["mid.0", "mid.1", "mid.2"]


def _decoder_blocks(a: ArchSpec) -> list[str]:
    """LlamaGen's name of each block of our ``decoder.body``, by index (vq_model.py:140-163)."""
    last, out = len(a.ch_mult) - 1, ["mid.0", "mid.1", "mid.2"]
    for i in range(len(a.ch_mult)):  # conv_blocks[i] is level len - 1 - i: the lowest resolution first
        for j in range(a.num_res_blocks + 1):
            out.append(f"conv_blocks.{i}.res.{j}")
            if i == 0:
                out.append(f"conv_blocks.{i}.attn.{j}")
        if i != last:
            out.append(f"conv_blocks.{i}.upsample")
    return out


def _check_plain_vq(model: nn.Module, what: str) -> None:
    q = model.quantizer
    if not isinstance(q, VectorQuantizer):
        raise CheckpointError(f"{what}: a LlamaGen-format model has one codebook; it loads onto quant.kind=vq only")
    if q.projector is not None:
        raise CheckpointError(f"{what}: a LlamaGen-format codebook is already projected (FVQ convert_fullvq2vq.py); "
                              f"it loads onto quant.projector=none only")


def key_table(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Our state-dict key -> the LlamaGen key(s) it is made of (three for a qkv: q, k, v stacked on dim 0)."""
    _check_plain_vq(model, "model")
    return _table(model.spec, model.state_dict())


def _table(spec: ArchSpec, keys) -> dict[str, tuple[str, ...]]:
    blocks = {"encoder": _encoder_blocks(spec), "decoder": _decoder_blocks(spec)}
    table: dict[str, tuple[str, ...]] = {}
    for key in keys:
        m = re.fullmatch(r"(encoder|decoder)\.body\.(\d+)\.(\w+)\.(\w+)", key)
        if key == "quantizer.embedding":
            table[key] = ("quantize.embedding.weight",)
        elif m:
            part, n, leaf, param = m.groups()
            if int(n) >= len(blocks[part]):  # the walk above and fvq/vq/models.py disagree: a bug, not input
                raise RuntimeError(f"{key}: no LlamaGen name for block {n} of the {part} (checkpoint_io.py)")
            prefix = f"{part}.{blocks[part][int(n)]}."
            table[key] = tuple(f"{prefix}{x}.{param}" for x in "qkv") if leaf == "qkv" else \
                (f"{prefix}{_LEAF.get(leaf, leaf)}.{param}",)
        else:
            table[key] = (key,)  # conv_in, norm_out, conv_out, quant_conv, post_quant_conv
    return table


@torch.no_grad()  # as evaluation runs the projector (nn.MultiheadAttention's no-grad path rounds differently)
def to_llamagen(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our model as LlamaGen's ``VQModel.state_dict()`` (what FVQ's converter writes): the codebook baked through
    the projector (``export``: section 3.2, convert_fullvq2vq.py:230-231), the usage buffer zeroed."""
    if not isinstance(model.quantizer, VectorQuantizer):
        raise CheckpointError("model: a LlamaGen-format model has one codebook; it is written from quant.kind=vq only")
    sd = model.state_dict()
    # LlamaGen's order (vq_model.py:32-39): encoder, decoder, quantize, quant_conv, post_quant_conv
    ours = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder."))}
    # what export() bakes (projector, then l2 normalisation): LlamaGen normalises again at use, a no-op
    ours["quantizer.embedding"] = model.quantizer.codebook().detach().float()
    ours.update({k: v for k, v in sd.items() if k not in ours and not k.startswith("quantizer.")})
    out: dict[str, torch.Tensor] = {}
    for key, theirs in _table(model.spec, ours).items():
        for name, part in zip(theirs, ours[key].chunk(len(theirs), 0)):
            out[name] = part.clone()
        if key == "quantizer.embedding":
            out["quantize.codebook_used"] = torch.zeros(USAGE_SLOTS, device=part.device)
    return out


def read_checkpoint(path: str) -> dict:
    """The file's top-level dict, loaded with ``weights_only=True`` (plus argparse.Namespace); one line if not."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist" if not os.path.exists(path)
                              else f"checkpoint {path} is not a file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle of a foreign class, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
                              f"{one_line(e)[:120]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of weights")
    return obj


def model_state(obj: dict, path: str) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint: ``ema``, ``model`` or ``state_dict``, or the dict itself."""
    sd = next((obj[w] for w in WRAPPERS if isinstance(obj.get(w), dict)), obj)
    if not sd or not all(torch.is_tensor(v) for v in sd.values()):
        keys = ", ".join(list(map(str, obj))[:6])
        raise CheckpointError(f"checkpoint {path} holds no model weights (top-level keys: {keys})")
    return sd


def detect_format(sd: dict[str, torch.Tensor]) -> str:
    """llamagen when a key is spelled the LlamaGen way (``quantize.``, ``conv_blocks``, ``mid``), else fvq."""
    theirs = re.compile(r"quantize\.|(en|de)coder\.(conv_blocks|mid)\.")
    return "llamagen" if any(theirs.match(k) for k in sd) else "fvq"


def _hint(key: str, model: nn.Module) -> str:
    if key.startswith("quantize.qbridge"):
        return "an FVQ-format checkpoint with its VQBridge: convert it to VQGAN format first (FVQ convert_fullvq2vq.py)"
    if key.startswith(("encoder.body.", "decoder.body.", "quantizer.")):
        return "an fvq checkpoint: use format=fvq"
    return f"no LlamaGen key of model.arch={model.arch_name} (another architecture?)"


def _shape_error(src: str, key: str, got: tuple, want: tuple, model: nn.Module) -> CheckpointError:
    why = f"model.arch={model.arch_name} expects {want}"
    if key == "quantize.embedding.weight":  # the usual mismatch: say which keys fit the file
        why = (f"quant.codebook_size={want[0]} model.channel={want[1]} expect {want}; the file's codebook needs "
               f"quant.codebook_size={got[0]} model.channel={got[1]}")
    elif key.startswith(("quant_conv.", "post_quant_conv.")) and len(got) == len(want):
        d = got[0] if key.startswith("quant_conv.") else got[1] if len(got) > 1 else None
        if d is not None:  # the code dimension d sits on one side of these 1x1 convs
            why += f" (the file's codes have d={d}: model.channel={d})"
    return CheckpointError(f"{src}: {key} has shape {got}, {why}")


def from_llamagen(sd: dict[str, torch.Tensor], model: nn.Module, src: str = "state dict") -> dict[str, torch.Tensor]:
    """A LlamaGen-format state dict in our names for ``model``, every key and shape checked (module docstring)."""
    _check_plain_vq(model, src)
    table, want = key_table(model), {k: tuple(v.shape) for k, v in model.state_dict().items()}
    part_of = {t: (ours, len(ts)) for ours, ts in table.items() for t in ts}
    for key, value in sd.items():  # the file's order: the first offending key is the one named
        if key in DROPPED:
            continue
        if key not in part_of:
            raise CheckpointError(f"{src}: key {key!r} does not map onto our VQModel ({_hint(key, model)})")
        ours, parts = part_of[key]
        shape = (want[ours][0] // parts, *want[ours][1:])
        if tuple(value.shape) != shape:
            raise _shape_error(src, key, tuple(value.shape), shape, model)
    for ours, theirs in table.items():
        for t in theirs:
            if t not in sd:
                raise CheckpointError(f"{src}: key {t!r} is missing (model.arch={model.arch_name} needs it)")
    return {ours: torch.cat([sd[t] for t in ts]) if len(ts) > 1 else sd[ts[0]] for ours, ts in table.items()}


def from_fvq(sd: dict[str, torch.Tensor], model: nn.Module, src: str = "state dict") -> dict[str, torch.Tensor]:
    """Our own state dict, checked against ``model`` the same way (the first unknown / mismatched / missing key)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, value in sd.items():
        if key not in want:
            why = "a LlamaGen-format checkpoint: use format=llamagen" if detect_format({key: value}) == "llamagen" \
                else "another quantizer or projector?"
            raise CheckpointError(f"{src}: key {key!r} is not a key of this model ({why})")
        if tuple(value.shape) != want[key]:
            raise CheckpointError(f"{src}: {key} has shape {tuple(value.shape)}, this model expects {want[key]}")
    missing = next((k for k in want if k not in sd), None)
    if missing is not None:
        raise CheckpointError(f"{src}: key {missing!r} is missing (this model needs it)")
    return sd


def load_state(model: nn.Module, sd: dict[str, torch.Tensor], fmt: str, src: str) -> None:
    """Check and copy ``sd`` (in ``fmt``: llamagen or fvq) into ``model``."""
    if fmt not in FORMATS:
        raise CheckpointError(f"format={fmt!r} is not one of {', '.join(FORMATS)}")
    ours = from_llamagen(sd, model, src) if fmt == "llamagen" else from_fvq(sd, model, src)
    model.load_state_dict(ours)  # every key and shape was checked above: strict cannot fail here


def load_weights(model: nn.Module, path: str, fmt: str = "auto") -> str:
    """Load the weights of the file at ``path`` into ``model``; ``fmt`` auto tells the formats apart by key
    names. Returns the format used."""
    if fmt not in (*FORMATS, "auto"):
        raise CheckpointError(f"format={fmt!r} is not one of {', '.join(FORMATS)}, auto")
    sd = model_state(read_checkpoint(path), path)
    fmt = detect_format(sd) if fmt == "auto" else fmt
    load_state(model, sd, fmt, path)
    return fmt

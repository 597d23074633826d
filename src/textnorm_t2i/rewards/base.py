"""The reward interface: ``score(images, prompts) -> torch.Tensor``, one float per (image, prompt) pair.

Images are a list of PIL images or a float tensor ``N x 3 x H x W`` in [0, 1]. Every reward batches
internally (``batch_size``), runs on a chosen device/dtype, and works under ``torch.no_grad`` unless
``grad=True`` is asked for (e.g. for reward-gradient fine-tuning).

Rewards that are evaluated over *sets* of prompts per image (TextNorm) call :meth:`Reward.score_sets`;
the default repeats each image once per prompt, and dual encoders override it to embed each image
once and each distinct prompt once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import MAX_IMAGE_PIXELS, open_image

Images = Sequence[Image.Image] | torch.Tensor
SCORE_MATRIX_PAIRS = 4096  # the most (image, prompt) pairs score_matrix tiles at once


def to_tensor(images: Images, size: int | None = None) -> torch.Tensor:
    """Images as a float tensor ``N x 3 x H x W`` in [0, 1], optionally centre-cropped and resized.

    With ``size``, each image is centre-cropped to a square and resized (bicubic, antialiased) to
    ``size x size``; images of different sizes may then be mixed in one list.

    Example:
        >>> x = to_tensor([Image.new("RGB", (40, 32), (255, 0, 0))], size=16)
        >>> tuple(x.shape), float(x[0, 0].mean())
        ((1, 3, 16, 16), 1.0)
    """
    if isinstance(images, (torch.Tensor, np.ndarray)):
        batch = _prepare(images)
        return _square_resize(batch, size) if size else batch
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            raise InputError(f"image {i}: expected a PIL image or a tensor, got {type(img).__name__}")
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1)[None]
        out.append(_square_resize(t, size) if size else t)
    if not out:
        return torch.zeros(0, 3, size or 1, size or 1)
    if len({t.shape for t in out}) > 1:
        raise InputError("images differ in size; pass a size to resize them")
    return torch.cat(out)


def _square_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    if side == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _prepare(images: Images | Sequence[str | os.PathLike] | np.ndarray) -> Images:
    """Every image form a reward accepts, converted here (the one place) or refused with one line:

    - a list of PIL images (at most :data:`~textnorm_t2i.io.MAX_IMAGE_PIXELS` each) or image paths (opened as RGB);
    - a float tensor or array ``N x 3 x H x W`` or ``N x H x W x 3`` with values in [0, 1] (NaN, infinities and
      values outside are refused: a 0-255 float image is a mistake, not a brighter image);
    - a ``uint8`` tensor or array in either layout, read as 0-255 and divided by 255.

    Tensors come back as ``N x 3 x H x W`` floats (channels first; a tensor that carries gradients keeps them).

    Example:
        >>> x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)  # N x H x W x 3, 0-255
        >>> _prepare(x).shape, float(_prepare(x).max())
        (torch.Size([1, 3, 2, 2]), 1.0)
        >>> _prepare(torch.full((1, 3, 2, 2), 255.0))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: float images must have values in [0, 1], got values up to 255.0; ...
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"image array must be uint8 (0-255) or float (0-1), got {images.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(images))
    if isinstance(images, torch.Tensor):
        if images.ndim == 4 and images.shape[1] != 3 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)  # N x H x W x 3 -> N x 3 x H x W
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"image tensor must be N x 3 x H x W or N x H x W x 3, got shape {tuple(images.shape)}")
        if images.shape[0] and (images.shape[2] == 0 or images.shape[3] == 0):
            raise InputError(f"image tensor has no pixels (shape {tuple(images.shape)})")
        if images.dtype == torch.uint8:
            return images.float() / 255.0
        if not images.is_floating_point():
            raise InputError(f"image tensor must be uint8 (0-255) or float (0-1), got {images.dtype}")
        if images.numel():
            values = images.detach()
            if not bool(torch.isfinite(values).all()):
                raise InputError("image tensor holds NaN or infinite pixels")
            lo, hi = float(values.min()), float(values.max())
            if lo < -1e-4 or hi > 1 + 1e-4:
                raise InputError(f"float images must have values in [0, 1], got values up to {hi if hi > 1 else lo}; "
                                 "pass uint8 for 0-255 images")
        return images
    if isinstance(images, (str, os.PathLike, Image.Image)):
        raise InputError("images must be a list (of PIL images or paths) or an N x 3 x H x W tensor, "
                         "not a single image")
    if not isinstance(images, Sequence):
        raise InputError(f"images must be a list (of PIL images or paths) or an N x 3 x H x W tensor, got "
                         f"{type(images).__name__}")
    for i, img in enumerate(images):
        if isinstance(img, Image.Image) and img.width * img.height > MAX_IMAGE_PIXELS:
            raise InputError(f"image {i}: {img.width}x{img.height} is larger than the {MAX_IMAGE_PIXELS:,} pixels "
                             "a reward accepts; resize it first")
    if any(isinstance(i, (str, os.PathLike)) for i in images):
        return [open_image(i) if isinstance(i, (str, os.PathLike)) else i for i in images]
    return images


def check_finite(scores: torch.Tensor, reward: str, prompts: Sequence[str]) -> None:
    """Refuse a non-finite score, naming the reward, the prompt and the value (a NaN reward would otherwise
    silently poison an update, a best-of-n pick or a results file).

    Example:
        >>> check_finite(torch.tensor([1.0, float("nan")]), "mine", ["a", "b"])
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: reward 'mine' gave nan for prompt 'b' (pair 1); rewards must be finite numbers
    """
    finite = torch.isfinite(scores.detach())
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0, 0])
        raise InputError(f"reward {reward!r} gave {float(scores[i])} for prompt {prompts[i]!r} (pair {i}); rewards "
                         "must be finite numbers")


def check_prompts(prompts: Sequence[str], what: str = "prompts") -> None:
    """Refuse anything but a list (or tuple) of strings, saying what was given instead."""
    if isinstance(prompts, str):
        raise InputError(f"{what} must be a list of strings, not a single string")
    if not isinstance(prompts, Sequence):
        raise InputError(f"{what} must be a list of strings, got {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputError(f"{what}[{i}]: expected a string, got {type(p).__name__}")


def _check_pairs(images: Images, prompts: Sequence[str]) -> int:
    n = len(images)
    check_prompts(prompts)
    if len(prompts) != n:
        raise InputError(f"got {n} images but {len(prompts)} prompts; pass one prompt per image")
    return n


def _take(images: Images, index: Sequence[int] | slice) -> Images:
    if isinstance(images, torch.Tensor):
        return images[index] if isinstance(index, slice) else images[torch.as_tensor(list(index), dtype=torch.long)]
    if isinstance(index, slice):
        return list(images[index])
    return [images[i] for i in index]


def _widened(x: torch.Tensor) -> torch.Tensor:
    """Scores and embeddings in float32, or float64 when the model computes in float64 (exact benchmark tables)."""
    return x if x.dtype == torch.float64 else x.float()


class Reward:
    """Base class of every reward model.

    :meth:`score` (also ``reward(images, prompts)``) is the one validated entry point: images are a list
    of PIL images or image paths, or an ``N x 3 x H x W`` tensor in [0, 1]; prompts a list of strings, one
    per image. Subclasses implement a hook: :meth:`_score_batch` (one batch of aligned pairs; the base
    class batches), or :meth:`_score` to take over batching (dual encoders, TextNorm, ensembles).

    Example:
        >>> class Brightness(Reward):
        ...     name = "brightness"
        ...     def _score_batch(self, images, prompts):
        ...         return to_tensor(images).mean(dim=(1, 2, 3))
        >>> Brightness()(torch.ones(2, 3, 4, 4), ["a", "b"])
        tensor([1., 1.])
    """

    name: str = "reward"
    # True when ``score(..., grad=True)`` is a differentiable function of the pixels (reward-gradient fine-tuning
    # needs it); None when unknown until tried (a plain callable).
    differentiable: bool | None = False

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = 32):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"device: {device!r} is not a device (e.g. cpu, cuda, cuda:1)") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device: {device!r} asked for, but no CUDA device is available")
        self.dtype = dtype
        self.batch_size = batch_size

    # -- the entry points: validate, then call the hooks
    def score(self, images: Images | Sequence[str | os.PathLike], prompts: Sequence[str],
              grad: bool = False) -> torch.Tensor:
        """One float32 score per (image, prompt) pair, on the CPU unless ``grad``."""
        images = _prepare(images)
        n = _check_pairs(images, prompts)
        if n == 0:
            return torch.zeros(0)
        with torch.set_grad_enabled(grad):
            out = self._score(images, list(prompts), grad).reshape(-1).float()
        if out.numel() != n:
            raise InputError(f"reward {self.name!r} returned {out.numel()} scores for {n} pairs")
        check_finite(out, self.name, prompts)
        return out if grad else out.detach().cpu()

    def __call__(self, images: Images | Sequence[str | os.PathLike], prompts: Sequence[str],
                 grad: bool = False) -> torch.Tensor:
        return self.score(images, prompts, grad=grad)

    def score_matrix(self, images: Images | Sequence[str | os.PathLike], prompts: Sequence[str]) -> torch.Tensor:
        """``M x N`` scores of every image against every prompt (t2v_metrics' matrix mode), on the CPU.

        Example:
            >>> class Brightness(Reward):
            ...     def _score_batch(self, images, prompts):
            ...         return to_tensor(images).mean(dim=(1, 2, 3)) * torch.tensor([len(p) for p in prompts])
            >>> Brightness().score_matrix(torch.ones(2, 3, 4, 4), ["a", "bb", "ccc"]).tolist()
            [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
        """
        images = _prepare(images)
        check_prompts(prompts)
        m, n = len(images), len(prompts)
        # Image rows in chunks, so that at most about SCORE_MATRIX_PAIRS image copies are in memory at once.
        rows = max(1, SCORE_MATRIX_PAIRS // max(n, 1))
        parts = []
        for lo in range(0, m, rows):
            chunk = _take(images, slice(lo, lo + rows))
            if isinstance(chunk, torch.Tensor):
                tiled = chunk.repeat_interleave(n, dim=0)
            else:
                tiled = [img for img in chunk for _ in range(n)]
            parts.append(self.score(tiled, list(prompts) * len(chunk)).reshape(len(chunk), n))
        return torch.cat(parts) if parts else torch.zeros(0, n)

    def score_sets(self, images: Images | Sequence[str | os.PathLike], prompt_sets: Sequence[Sequence[str]],
                   grad: bool = False) -> list[torch.Tensor]:
        """For image ``i``, the scores of every prompt in ``prompt_sets[i]`` (a list of 1-D tensors)."""
        images = _prepare(images)
        if len(prompt_sets) != len(images):
            raise InputError(f"got {len(images)} images but {len(prompt_sets)} prompt sets")
        for i, ps in enumerate(prompt_sets):
            check_prompts(ps, f"prompt set {i}")
        sets = [list(ps) for ps in prompt_sets]
        with torch.set_grad_enabled(grad):
            out = self._score_sets(images, sets, grad)
        for o, ps in zip(out, sets):
            check_finite(o.reshape(-1), self.name, ps)
        return out if grad else [_widened(o.detach()).cpu() for o in out]

    # -- the hooks
    def _score_batch(self, images: Images, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _score_batch or _score")

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        step = self.batch_size
        parts = [self._score_batch(_take(images, slice(lo, lo + step)), prompts[lo : lo + step])
                 for lo in range(0, len(prompts), step)]
        return torch.cat([p.reshape(-1).float() for p in parts])

    def _score_sets(self, images: Images, prompt_sets: list[list[str]], grad: bool) -> list[torch.Tensor]:
        """Default: each image repeated once per prompt of its set; dual encoders override it."""
        index = [i for i, ps in enumerate(prompt_sets) for _ in ps]
        flat = [p for ps in prompt_sets for p in ps]
        scores = self.score(_take(images, index), flat, grad=grad) if flat else torch.zeros(0)
        return list(torch.split(scores, [len(ps) for ps in prompt_sets]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r})"


class CallableReward(Reward):
    """Wrap a plain function ``fn(images, prompts) -> scores`` as a :class:`Reward`.

    Example:
        >>> r = CallableReward(lambda images, prompts: [len(p) for p in prompts], name="length")
        >>> r.score(torch.zeros(2, 3, 4, 4), ["ab", "abc"])
        tensor([2., 3.])
    """

    def __init__(self, fn: Callable[[Images, list[str]], Any], name: str | None = None, batch_size: int = 1024,
                 differentiable: bool | None = None):
        super().__init__(batch_size=batch_size)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        self.differentiable = differentiable  # None: found out by trying (a tensor with a graph, or not)

    def _score_batch(self, images: Images, prompts: list[str]) -> torch.Tensor:
        given = self.fn(images, prompts)
        try:  # a tensor keeps its autograd graph; lists and arrays become float32
            out = given.float() if isinstance(given, torch.Tensor) else torch.as_tensor(given, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"reward {self.name!r} returned {type(given).__name__}, not one number per pair") from None
        if out.numel() != len(prompts):
            raise InputError(f"reward {self.name!r} returned {out.numel()} scores for {len(prompts)} pairs")
        return out.reshape(-1)


def as_reward(obj: Reward | Callable) -> Reward:
    """A :class:`Reward` from a reward, or from any object with ``score`` or a callable.

    Example:
        >>> as_reward(lambda images, prompts: [0.0] * len(prompts)).name
        '<lambda>'
    """
    if isinstance(obj, Reward):
        return obj
    if hasattr(obj, "score") and callable(obj.score):
        return CallableReward(obj.score, name=getattr(obj, "name", type(obj).__name__))
    if callable(obj):
        return CallableReward(obj)
    raise InputError(f"not a reward: {type(obj).__name__} has no score(images, prompts) and is not callable")


class DualEncoderReward(Reward):
    """A reward ``scale x cosine(image embedding, text embedding)`` (CLIP-style); differentiable in the pixels.

    Text embeddings are cached per distinct prompt across calls, and :meth:`score_sets` embeds each
    image once; each distinct prompt is embedded once (see benchmarks/textnorm_overhead.py for the cost).
    Subclasses implement :meth:`embed_images` and :meth:`_embed_texts` (unnormalised is fine) and
    :meth:`logit_scale`.
    """

    differentiable = True

    def __init__(self, *args: Any, cache_texts: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cache_texts = cache_texts
        self._text_cache: dict[str, torch.Tensor] = {}

    def embed_images(self, images: Images) -> torch.Tensor:
        raise NotImplementedError

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def logit_scale(self) -> float:
        return 1.0

    def image_embeddings(self, images: Images) -> torch.Tensor:
        """L2-normalised image embeddings, computed in batches."""
        parts = [self.embed_images(_take(images, slice(lo, lo + self.batch_size)))
                 for lo in range(0, len(images), self.batch_size)]
        return F.normalize(_widened(torch.cat(parts)), dim=-1)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per prompt; each distinct prompt is embedded once."""
        todo = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        new = {}
        with torch.no_grad():
            for lo in range(0, len(todo), self.batch_size):
                chunk = todo[lo : lo + self.batch_size]
                emb = F.normalize(_widened(self._embed_texts(chunk)), dim=-1)
                new.update(zip(chunk, emb))
        if self.cache_texts:
            self._text_cache.update(new)
        table = {**self._text_cache, **new} if not self.cache_texts else self._text_cache
        return torch.stack([table[p] for p in prompts]) if prompts else torch.zeros(0)

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        img = self.image_embeddings(images)
        txt = self.text_embeddings(prompts).to(img.device)
        return self.logit_scale() * (img * txt).sum(-1)

    def score_matrix(self, images: Images | Sequence[str | os.PathLike], prompts: Sequence[str]) -> torch.Tensor:
        """``M x N`` scores from M image and N text embeddings (each computed once, texts cached)."""
        images = _prepare(images)
        check_prompts(prompts)
        if len(images) == 0 or len(prompts) == 0:
            return torch.zeros(len(images), len(prompts))
        with torch.no_grad():
            img = self.image_embeddings(images)
            txt = self.text_embeddings(list(prompts)).to(img.device)
            return (self.logit_scale() * img @ txt.T).float().cpu()

    def _score_sets(self, images: Images, prompt_sets: list[list[str]], grad: bool) -> list[torch.Tensor]:
        img = self.image_embeddings(images)
        distinct = list(dict.fromkeys(p for ps in prompt_sets for p in ps))
        row = {p: i for i, p in enumerate(distinct)}
        txt = self.text_embeddings(distinct).to(img.device)
        scale = self.logit_scale()
        return [scale * (txt[[row[p] for p in ps]] @ img[i]) for i, ps in enumerate(prompt_sets)]

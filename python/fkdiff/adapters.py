"""Adapters from users' pretrained image diffusion networks to :class:`fkdiff.diffusion.Denoiser`.

Three pieces, each usable alone:

* :class:`NetworkAdapter` wraps a raw network into the ``model(x, timestep) -> tensor`` callable
  that :class:`~fkdiff.diffusion.EpsilonDenoiser`, :class:`~fkdiff.diffusion.X0Denoiser` and
  :class:`~fkdiff.diffusion.VDenoiser` expect: it moves inputs to the network's device and dtype
  (and the output back), passes a fixed class label through the network's keyword
  (``class_labels=`` for diffusers, ``y=`` for guided-diffusion / ADM), keeps the first ``C`` of
  ``2C`` output channels of learned-variance (ADM) networks, unflattens ``(batch, D)`` inputs
  for image networks, and runs the network without an autograd graph unless the input asks for
  gradients.
* :func:`from_network` (a raw network plus its ``alphas_cumprod`` table and prediction type) and
  :func:`from_diffusers` (a diffusers ``UNet2DModel`` and its scheduler, from a local folder or
  as objects) build the matching denoiser.
* :func:`to_model_range`, :func:`from_model_range` and :func:`observation_to_model_range` move
  images and linear observations between the user's data range (e.g. ``[0, 1]``) and the
  network's ``[-1, 1]``.

Conventions (those of :mod:`fkdiff.diffusion`): the table ``alphas_cumprod`` has ``T + 1``
entries with ``abar[0] = 1`` (clean data); table index ``t in 1..T`` is the network's timestep
``t - 1`` (diffusers and guided-diffusion both count ``0..T-1``, and their ``alphas_cumprod[0]``
already carries one step of noise).

Samplers work in the network's range: a user whose images and observations live in ``[0, 1]``
converts the observation with :func:`observation_to_model_range`, samples, and maps the samples
back with :func:`from_model_range` (see ``docs/adapters.md``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .diffusion import Denoiser, EpsilonDenoiser, VDenoiser, X0Denoiser, check_schedule

__all__ = [
    "PREDICTION_TYPES",
    "NetworkAdapter",
    "from_network",
    "from_diffusers",
    "parse_data_range",
    "to_model_range",
    "from_model_range",
    "observation_to_model_range",
]

#: the prediction types (diffusers' names) and the denoiser class each maps to
PREDICTION_TYPES: dict[str, type[Denoiser]] = {
    "epsilon": EpsilonDenoiser,
    "sample": X0Denoiser,
    "v_prediction": VDenoiser,
}
_ALIASES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}

#: the label keywords of the two common conventions
_LABEL_KWARGS = ("class_labels", "y")

_INSTALL_HINT = 'pip install "fkdiff[diffusers]" (or pip install diffusers)'


def _prediction_class(prediction_type: str) -> tuple[str, type[Denoiser]]:
    name = _ALIASES.get(prediction_type, prediction_type) if isinstance(prediction_type, str) else prediction_type
    if name not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type: expected one of {', '.join(map(repr, PREDICTION_TYPES))} "
            f"(or the aliases 'eps', 'x0', 'v'), got {prediction_type!r}"
        )
    return name, PREDICTION_TYPES[name]


# --------------------------------------------------------------------------------------------
# The network callable
# --------------------------------------------------------------------------------------------


class NetworkAdapter:
    """A raw network as the ``model(x, timestep) -> tensor`` callable of the network denoisers.

    ``x`` is ``(batch, *event_shape)`` in the sampler's dtype and device, ``timestep`` a ``(batch,)``
    long tensor (the network's own index, ``t - 1``). The output has the shape, dtype and device
    of ``x``.

    Args:
        model: the network, called as ``model(x, timestep)`` or ``model(x, timestep,
            **{label_kwarg: labels})``. It may return a tensor, a diffusers output (its
            ``.sample`` is used) or a tuple whose first entry is the tensor. A
            ``torch.nn.Module`` is put in eval mode here (dropout off: a sampler needs the
            deterministic network).
        learned_variance: whether the network outputs ``2C`` channels on dim 1 for ``C`` input
            channels (guided-diffusion / ADM ``learn_sigma=True``: the prediction, then the
            variance interpolation), of which the first ``C`` are kept. ``None`` (default)
            decides from the output: ``C`` channels are used as they are, ``2C`` are cut to the
            first ``C``, anything else is an error. ``True`` / ``False`` require the one form.
        class_label: a fixed class (an int, or a 0-d / one-element integer tensor) passed to the
            network, expanded to the batch as a ``(batch,)`` long tensor on the network's device;
            ``None`` (default) passes no label.
        label_kwarg: the keyword the label goes through: ``"class_labels"`` (default, diffusers'
            ``UNet2DModel``) or ``"y"`` (guided-diffusion's ``UNetModel``); any other keyword is
            accepted as given.
        input_shape: the network's per-sample input shape, e.g. ``(3, 32, 32)``. When given, a
            flat ``(batch, D)`` input with ``D = prod(input_shape)`` is reshaped to
            ``(batch, *input_shape)`` for the network and the output flattened back, so an image
            network serves operators that work on flat vectors (``DenseOperator``). Other inputs
            pass unchanged. Default None: no reshaping.

    Device and dtype: inputs, timesteps and labels are moved to the device and floating dtype of
    the network's first parameter (no move for a callable without parameters), and the output
    is moved back to ``x``'s. A float16 network thus serves a float32 sampler.

    Gradients: the network runs under ``torch.no_grad()`` unless grad mode is on *and* ``x``
    requires grad. Samplers that differentiate through the denoiser (DPS, PiGDM, DCPS with a
    network prior) hand it an ``x`` that requires grad inside ``torch.enable_grad()``, and get
    the full graph; every other call builds no graph, so the activations of the network are
    never kept. Grad mode itself is left to the caller. (The test is on ``x.requires_grad``:
    ``torch.func`` transforms that do not set it would see no gradient.)
    """

    def __init__(
        self,
        model: Callable,
        *,
        learned_variance: bool | None = None,
        class_label: int | torch.Tensor | None = None,
        label_kwarg: str = "class_labels",
        input_shape: tuple[int, ...] | None = None,
    ):
        if not callable(model):
            raise TypeError(f"model: expected a callable network, got {type(model).__name__}")
        if learned_variance not in (None, True, False):
            raise TypeError(f"learned_variance: expected None (detect), True or False, got {learned_variance!r}")
        if not isinstance(label_kwarg, str) or not label_kwarg.isidentifier():
            raise ValueError(f"label_kwarg: expected a keyword name such as 'class_labels' or 'y', got {label_kwarg!r}")
        self.model = model
        self.learned_variance = learned_variance
        self.class_label = _check_label(class_label)
        self.label_kwarg = label_kwarg
        if input_shape is not None:
            input_shape = tuple(int(n) for n in input_shape)
            if not input_shape or any(n < 1 for n in input_shape):
                raise ValueError(f"input_shape: expected positive sizes, got {input_shape}")
        self.input_shape = input_shape
        if isinstance(model, torch.nn.Module):
            model.eval()

    def __repr__(self) -> str:
        name = type(self.model).__name__
        return (f"NetworkAdapter({name}, learned_variance={self.learned_variance}, class_label={self.class_label}, "
                f"label_kwarg={self.label_kwarg!r}, input_shape={self.input_shape})")

    def _placement(self, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
        """The network's device and floating dtype (``x``'s for a callable without parameters)."""
        if isinstance(self.model, torch.nn.Module):
            for p in self.model.parameters():
                if p.is_floating_point():
                    return p.device, p.dtype
        return x.device, x.dtype

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        device, dtype = self._placement(x)
        xin = x.to(device=device, dtype=dtype)
        flat = self.input_shape is not None and x.dim() == 2 and x.shape[1] == math.prod(self.input_shape)
        if flat:
            xin = xin.reshape(batch, *self.input_shape)
        kwargs = {}
        if self.class_label is not None:
            kwargs[self.label_kwarg] = torch.full((batch,), self.class_label, dtype=torch.long, device=device)
        grad = torch.is_grad_enabled() and x.requires_grad
        with contextlib.nullcontext() if grad else torch.no_grad():
            out = self.model(xin, timestep.to(device), **kwargs)
        out = _unwrap(out)
        out = self._keep_prediction(out, xin)
        if flat:
            out = out.reshape(batch, -1)
        return out.to(device=x.device, dtype=x.dtype)

    def _keep_prediction(self, out: torch.Tensor, xin: torch.Tensor) -> torch.Tensor:
        """The prediction part of the output: all of it, or the first ``C`` of ``2C`` channels."""
        shape, got = tuple(xin.shape), tuple(out.shape)
        channels = shape[1] if len(shape) > 1 else None
        doubled = (channels is not None and len(got) == len(shape) and got[0] == shape[0]
                   and got[1] == 2 * channels and got[2:] == shape[2:])
        if got == shape and self.learned_variance is not True:
            return out
        if doubled and self.learned_variance is not False:
            return out[:, :channels]
        if self.learned_variance is True:
            want = f"(batch, 2C = {2 * channels}, ...) for learned_variance=True" if channels else "2C channels"
        elif self.learned_variance is False:
            want = f"{shape} (the input's shape) for learned_variance=False"
        else:
            want = (f"{shape} (the input's shape) or {2 * channels} = 2C channels on dim 1 (a learned-variance "
                    f"ADM network)" if channels else f"{shape}")
        raise ValueError(f"model: returned shape {got} for an input of shape {shape}; expected {want}")


def _unwrap(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):  # diffusers' UNet2DOutput
        return out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):  # return_dict=False
        return out[0]
    raise TypeError(f"model: expected a tensor (or a diffusers output with .sample), got {type(out).__name__}")


def _check_label(label) -> int | None:
    if label is None:
        return None
    if isinstance(label, torch.Tensor):
        if label.numel() != 1 or label.is_floating_point() or label.is_complex():
            raise ValueError(f"class_label: expected one integer class, got a tensor of shape {tuple(label.shape)} "
                             f"and dtype {label.dtype} (a fixed label is expanded to each batch)")
        label = int(label.reshape(()).item())
    if isinstance(label, bool) or not isinstance(label, int) and not hasattr(label, "__index__"):
        raise TypeError(f"class_label: expected an int, got {type(label).__name__}")
    label = int(label)
    if label < 0:
        raise ValueError(f"class_label: expected a non-negative class index, got {label}")
    return label


# --------------------------------------------------------------------------------------------
# Raw networks
# --------------------------------------------------------------------------------------------


def from_network(
    model: Callable,
    alphas_cumprod,
    prediction_type: str = "epsilon",
    *,
    learned_variance: bool | None = None,
    class_label: int | torch.Tensor | None = None,
    label_kwarg: str = "class_labels",
    input_shape: tuple[int, ...] | None = None,
    timestep_fn: Callable[[int], int] | None = None,
    data_range="[-1,1]",
) -> Denoiser:
    """A :class:`~fkdiff.diffusion.Denoiser` for a raw network ``model(x, timestep[, label])``.

    Args:
        model: the network (see :class:`NetworkAdapter` for what it may take and return).
        alphas_cumprod: its training table: ``T + 1`` entries with a leading 1, or the ``T``
            entries diffusers / guided-diffusion store (a 1 is then prepended), so that table
            index ``t`` is the network's timestep ``t - 1``. E.g.
            :func:`fkdiff.diffusion.linear_schedule` (DDPM, ADM ImageNet 256) or
            :func:`fkdiff.diffusion.cosine_schedule` (ADM ImageNet 64, improved DDPM).
        prediction_type: what the network predicts: ``"epsilon"`` (default: DDPM, ADM),
            ``"sample"`` (x0) or ``"v_prediction"`` (``v = sqrt(abar) eps - sqrt(1 - abar) x0``);
            aliases ``"eps"``, ``"x0"``, ``"v"``.
        learned_variance, class_label, label_kwarg, input_shape: see :class:`NetworkAdapter`.
        timestep_fn: table index -> the network's timestep (default ``t - 1``). E.g.
            ``lambda t: (t - 1) * 1000 / T`` for guided-diffusion with ``rescale_timesteps``.
        data_range: the range of the user's images and observations, recorded on the denoiser
            as ``denoiser.data_range`` for the range conversions (the network itself is taken
            to work in ``[-1, 1]``; see :func:`to_model_range`). Default ``"[-1,1]"``: no
            conversion.

    Returns:
        An :class:`~fkdiff.diffusion.EpsilonDenoiser`, :class:`~fkdiff.diffusion.X0Denoiser` or
        :class:`~fkdiff.diffusion.VDenoiser` whose ``model`` is the :class:`NetworkAdapter`; it
        also carries ``prediction_type`` and ``data_range``.
    """
    name, cls = _prediction_class(prediction_type)
    data_range = parse_data_range(data_range)
    adapter = NetworkAdapter(model, learned_variance=learned_variance, class_label=class_label,
                             label_kwarg=label_kwarg, input_shape=input_shape)
    denoiser = cls(adapter, alphas_cumprod, timestep_fn)
    denoiser.prediction_type = name
    denoiser.data_range = data_range
    return denoiser


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------


def _import_diffusers():
    """diffusers, imported on first use only (it is an optional dependency and slow to import)."""
    try:
        return importlib.import_module("diffusers")
    except ImportError as err:
        raise ImportError(f"fkdiff.adapters.from_diffusers needs the diffusers package: {_INSTALL_HINT}") from err


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_scheduler(diffusers, folder: Path):
    """The scheduler saved in ``folder`` (its ``scheduler_config.json``), as the class it names
    when diffusers has it, else as a ``DDPMScheduler`` (only the table and prediction type
    matter here)."""
    config = _read_json(folder / "scheduler_config.json")
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        cls = diffusers.DDPMScheduler
    return cls.from_pretrained(str(folder), local_files_only=True)


def _scheduler_folder(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if (folder / "scheduler_config.json").is_file():
            return folder
    return None


def from_diffusers(
    path_or_model,
    scheduler=None,
    *,
    subfolder: str | None = None,
    class_label: int | torch.Tensor | None = None,
    data_range="[-1,1]",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
    learned_variance: bool | None = None,
) -> Denoiser:
    """A :class:`~fkdiff.diffusion.Denoiser` from a diffusers ``UNet2DModel`` and its scheduler.

    Loads offline only (``local_files_only=True``): download once, e.g.
    ``DDPMPipeline.from_pretrained("google/ddpm-cifar10-32").save_pretrained("ddpm-cifar10")`` or
    ``huggingface_hub.snapshot_download(...)``, and pass the folder.

    Args:
        path_or_model: one of

            * a folder holding a bare model (``config.json`` and weights) with the scheduler's
              ``scheduler_config.json`` beside it (the layout of ``google/ddpm-cifar10-32`` on the
              hub, or ``unet.save_pretrained(d); scheduler.save_pretrained(d)``);
            * a pipeline folder (``DDPMPipeline.save_pretrained``) with ``unet/`` and
              ``scheduler/`` subfolders;
            * a ``UNet2DModel`` object (``scheduler`` is then required);
            * a pipeline object with ``.unet`` and ``.scheduler`` (e.g. ``DDPMPipeline``).
        scheduler: None (default: read from the folder: beside the model, then ``scheduler/``,
            then the folder itself), a scheduler object (``DDPMScheduler``, ``DDIMScheduler`` or
            any with ``alphas_cumprod``) or a folder holding ``scheduler_config.json``. It gives
            the table ``alphas_cumprod`` (used as stored, in float64 with a leading 1: the noise
            levels the network was trained on) and ``config.prediction_type``.
        subfolder: the model's subfolder inside ``path_or_model`` when it is not ``unet/``.
        class_label: the fixed class of a class-conditional UNet (``num_class_embeds`` or
            ``class_embed_type`` set), passed as ``class_labels=`` expanded to each batch;
            required for such a network, refused for an unconditional one.
        data_range: the range of the user's images and observations, recorded as
            ``denoiser.data_range`` for :func:`observation_to_model_range` and
            :func:`from_model_range` (diffusers pipelines train on ``[-1, 1]``). Default
            ``"[-1,1]"``: no conversion.
        device, dtype: move the network there (``model.to``, in place); default None keeps it
            where it is. Inputs follow the network (see :class:`NetworkAdapter`), so a float16
            network on a GPU serves a float32 sampler.
        prediction_type: overrides the scheduler's (for configs that state it wrongly);
            default None reads ``scheduler.config.prediction_type``.
        learned_variance: default None reads the model config: ``out_channels == 2 *
            in_channels`` means learned variance (first ``C`` channels kept),
            ``out_channels == in_channels`` means none; anything else is an error.

    Returns:
        An :class:`~fkdiff.diffusion.EpsilonDenoiser`, :class:`~fkdiff.diffusion.X0Denoiser` or
        :class:`~fkdiff.diffusion.VDenoiser` (by prediction type) on the table ``[1,
        *scheduler.alphas_cumprod]``: table index ``t`` calls the network at timestep ``t - 1``.
        Flat ``(batch, C * H * W)`` inputs are reshaped to images for the network. The network is
        in eval mode; a network loaded here also has its parameters frozen
        (``requires_grad=False``: gradients are taken with respect to the input only).

    Raises:
        ImportError: diffusers is not installed.
        FileNotFoundError: the folder does not exist or holds no model / scheduler config.
        ValueError: unknown prediction type, a table whose length is not the scheduler's
            ``num_train_timesteps`` (or the model's), a model that is not a UNet2DModel, a
            missing or unexpected class label, output channels that are neither ``C`` nor ``2C``.
    """
    diffusers = _import_diffusers()
    parse_data_range(data_range)  # fail before loading anything
    loaded = False
    if isinstance(path_or_model, (str, os.PathLike)):
        model, found = _load_model(diffusers, Path(path_or_model).expanduser(), subfolder)
        loaded = True
        if scheduler is None:
            folder = _scheduler_folder(found)
            if folder is None:
                raise FileNotFoundError(
                    f"from_diffusers: no scheduler_config.json in {', '.join(map(str, found))}; pass scheduler= "
                    f"(a scheduler object or its folder)"
                )
            scheduler = _load_scheduler(diffusers, folder)
    elif hasattr(path_or_model, "unet") and hasattr(path_or_model, "scheduler"):  # a pipeline object
        model = path_or_model.unet
        scheduler = path_or_model.scheduler if scheduler is None else scheduler
    elif isinstance(path_or_model, torch.nn.Module):
        model = path_or_model
        if scheduler is None:
            raise ValueError("from_diffusers: a model object needs its scheduler (scheduler=DDPMScheduler(...) or a folder)")
    else:
        raise TypeError(f"path_or_model: expected a folder, a UNet2DModel or a pipeline, got {type(path_or_model).__name__}")

    if isinstance(scheduler, (str, os.PathLike)):
        root = Path(scheduler).expanduser()
        folder = _scheduler_folder([root, root / "scheduler"])
        if folder is None:
            raise FileNotFoundError(f"scheduler: no scheduler_config.json in {root} or {root / 'scheduler'}")
        scheduler = _load_scheduler(diffusers, folder)

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "in_channels"):
        raise ValueError(f"from_diffusers: expected a diffusers UNet2DModel, got {type(model).__name__} without its config")
    if getattr(config, "cross_attention_dim", None) is not None:
        raise ValueError(f"from_diffusers: {type(model).__name__} is text-conditioned (cross-attention); only UNet2DModel "
                         f"networks (unconditional or class-conditional) are supported")

    table = _scheduler_table(scheduler, model)
    name = prediction_type if prediction_type is not None else getattr(scheduler.config, "prediction_type", "epsilon")

    c_in, c_out = int(config.in_channels), int(config.out_channels)
    if learned_variance is None:
        if c_out == 2 * c_in:
            learned_variance = True
        elif c_out == c_in:
            learned_variance = False
        else:
            raise ValueError(f"from_diffusers: the model has {c_in} input and {c_out} output channels; expected "
                             f"{c_in} (a prediction) or {2 * c_in} (prediction and learned variance)")

    conditional = getattr(config, "num_class_embeds", None) is not None or getattr(config, "class_embed_type", None) is not None
    if conditional and class_label is None:
        raise ValueError("from_diffusers: the model is class-conditional; pass class_label= (the class to sample)")
    if not conditional and class_label is not None:
        raise ValueError("from_diffusers: class_label given, but the model is unconditional (no num_class_embeds)")
    num_classes = getattr(config, "num_class_embeds", None)
    label = _check_label(class_label)
    if label is not None and num_classes is not None and label >= num_classes:
        raise ValueError(f"class_label: expected a class in [0, {num_classes - 1}], got {label}")

    input_shape = None
    size = getattr(config, "sample_size", None)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        input_shape = (c_in, int(h), int(w))

    if isinstance(model, torch.nn.Module):
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        if loaded:
            model.requires_grad_(False)
    denoiser = from_network(model, table, name, learned_variance=learned_variance, class_label=label,
                            label_kwarg="class_labels", input_shape=input_shape, data_range=data_range)
    denoiser.scheduler = scheduler
    return denoiser


def _load_model(diffusers, root: Path, subfolder: str | None):
    """``(UNet2DModel, folders where its scheduler may be)`` from a bare-model or pipeline folder."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"from_diffusers: {str(root)!r} is not a folder. fkdiff loads offline only: download the model first, "
            f"e.g. DDPMPipeline.from_pretrained('google/ddpm-cifar10-32').save_pretrained('ddpm-cifar10'), "
            f"and pass that folder"
        )
    if subfolder is not None:
        model_dir = root / subfolder
    elif (root / "unet" / "config.json").is_file():
        model_dir = root / "unet"
    else:
        model_dir = root
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"from_diffusers: no config.json in {model_dir}; expected a model folder (config.json + weights, "
            f"scheduler_config.json beside them) or a pipeline folder (unet/ and scheduler/)"
        )
    class_name = _read_json(model_dir / "config.json").get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise ValueError(f"from_diffusers: {model_dir / 'config.json'} describes a {class_name}; only UNet2DModel "
                         f"networks (unconditional or class-conditional) are supported")
    model = diffusers.UNet2DModel.from_pretrained(str(model_dir), local_files_only=True)
    candidates = list(dict.fromkeys([model_dir, root / "scheduler", root]))
    return model, candidates


def _scheduler_table(scheduler, model) -> torch.Tensor:
    """``[1, *scheduler.alphas_cumprod]`` in float64, checked against ``num_train_timesteps``."""
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None or not hasattr(scheduler, "config"):
        raise ValueError(
            f"scheduler: {type(scheduler).__name__} has no alphas_cumprod table; from_diffusers supports "
            f"variance-preserving schedulers (DDPMScheduler, DDIMScheduler, ...), not VE / EDM ones"
        )
    abar = torch.as_tensor(abar).detach().to("cpu", torch.float64).reshape(-1)
    steps = getattr(scheduler.config, "num_train_timesteps", None)
    if steps is not None and abar.numel() != int(steps):
        raise ValueError(f"scheduler: alphas_cumprod has {abar.numel()} entries but num_train_timesteps is {steps}; "
                         f"the table must hold one entry per network timestep")
    model_steps = getattr(getattr(model, "config", None), "num_train_timesteps", None)
    if model_steps is not None and int(model_steps) != abar.numel():
        raise ValueError(f"scheduler: {abar.numel()} timesteps, but the model was built for num_train_timesteps = "
                         f"{model_steps}")
    return check_schedule(torch.cat([torch.ones(1, dtype=torch.float64), abar]), "scheduler.alphas_cumprod")


# --------------------------------------------------------------------------------------------
# Data ranges
# --------------------------------------------------------------------------------------------


_NAMED_RANGES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0)}


def parse_data_range(data_range) -> tuple[float, float]:
    """``(lo, hi)`` of a data range given as ``"[-1,1]"``, ``"[0,1]"`` (spaces allowed), a pair
    ``(lo, hi)`` with ``lo < hi`` (e.g. ``(0, 255)``), or an object carrying ``.data_range``
    (a denoiser built by :func:`from_network` / :func:`from_diffusers`)."""
    if hasattr(data_range, "data_range"):
        data_range = data_range.data_range
    if isinstance(data_range, str):
        key = data_range.replace(" ", "")
        if key not in _NAMED_RANGES:
            raise ValueError(f"data_range: expected '[-1,1]', '[0,1]' or a pair (lo, hi), got {data_range!r}")
        return _NAMED_RANGES[key]
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range: expected '[-1,1]', '[0,1]' or a pair (lo, hi), got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range: expected finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def _affine(data_range) -> tuple[float, float]:
    """``(c, d)`` with ``x_user = c x_model + d`` (model range ``[-1, 1]``)."""
    lo, hi = parse_data_range(data_range)
    return (hi - lo) / 2.0, (hi + lo) / 2.0


def to_model_range(x: torch.Tensor, data_range) -> torch.Tensor:
    """Images in ``data_range`` -> the network's ``[-1, 1]``: ``(x - d) / c`` with ``c = (hi -
    lo) / 2``, ``d = (hi + lo) / 2`` (``2 x - 1`` for ``[0, 1]``). Any shape; ``x`` itself is
    returned for ``"[-1,1]"``."""
    c, d = _affine(data_range)
    if (c, d) == (1.0, 0.0):
        return x
    return (x - d) / c


def from_model_range(x: torch.Tensor, data_range) -> torch.Tensor:
    """The network's ``[-1, 1]`` -> ``data_range``: ``c x + d`` (``(x + 1) / 2`` for ``[0, 1]``),
    e.g. on ``result.samples``. Any shape; no clipping (samples may overshoot the range
    slightly; clip for display if wanted). ``x`` itself is returned for ``"[-1,1]"``."""
    c, d = _affine(data_range)
    if (c, d) == (1.0, 0.0):
        return x
    return x * c + d


def observation_to_model_range(operator, y: torch.Tensor, sigma_y: float, data_range) -> tuple[torch.Tensor, float]:
    """A linear observation of data in ``data_range`` rewritten for data in ``[-1, 1]``.

    With ``x_user = c x_model + d 1`` (``c = (hi - lo) / 2``, ``d = (hi + lo) / 2``),
    ``y = A x_user + sigma_y z = c A x_model + d A 1 + sigma_y z``, so
    ``y_model = (y - d A 1) / c = A x_model + (sigma_y / c) z``. For ``[0, 1]``:
    ``y_model = 2 y - A 1`` and ``sigma_model = 2 sigma_y``.

    Args:
        operator: a :class:`fkdiff.operators.LinearOperator`; ``A 1`` is ``operator.A`` of a
            ``(1, *x_shape)`` tensor of ones in ``y``'s dtype and device.
        y: ``(*y_shape)``, ``(1, *y_shape)`` or ``(batch, *y_shape)``; the result has the same
            shape.
        sigma_y: the observation noise std in the user's range (>= 0).
        data_range: the user's range (see :func:`parse_data_range`).

    Returns:
        ``(y_model, sigma_model)`` to pass to a sampler with the network denoiser; map its
        samples back with :func:`from_model_range`.
    """
    c, d = _affine(data_range)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    sigma = float(sigma_y)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma_y: expected a finite number >= 0, got {sigma_y!r}")
    y_shape = tuple(operator.y_shape)
    single = tuple(y.shape) == y_shape
    if not single and tuple(y.shape[1:]) != y_shape:
        raise ValueError(f"y: expected shape {y_shape} or (batch, {', '.join(map(str, y_shape))}), got {tuple(y.shape)}")
    if not y.is_floating_point():
        y = y.to(torch.get_default_dtype())
    if (c, d) == (1.0, 0.0):
        return y, sigma
    if d == 0.0:
        return y / c, sigma / c
    ones = torch.ones((1, *operator.x_shape), dtype=y.dtype, device=y.device)
    a1 = operator.A(ones).to(y.dtype)
    if single:
        a1 = a1[0]
    return (y - d * a1) / c, sigma / c

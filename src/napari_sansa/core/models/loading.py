"""``load_model``: a registered model by name, or local weights files."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_sansa.core.errors import CheckpointError, InvalidInputError
from napari_sansa.core.model import SansaModel
from napari_sansa.core.models.adapters import inject_adapters
from napari_sansa.core.models.build import build_sam2, check_config_name
from napari_sansa.core.models.checkpoints import (
    adapter_layout,
    check_sam2_state_dict,
    guess_config,
    read_checkpoint,
)
from napari_sansa.core.models.device import resolve_device, resolve_precision
from napari_sansa.core.models.fingerprint import file_fingerprint
from napari_sansa.core.models.settings import ModelSettings

__all__ = ["build_sansa", "file_fingerprint", "load_model", "load_settings"]


def build_sansa(
    config: str, sam2_checkpoint, adapter_checkpoint=None, image_size: int | None = None
):
    """SAM2 ``config`` with Meta's weights and, when given, the authors' adapters.

    Both files are read and checked completely before any weight is copied into
    the freshly built model, so an unfit file raises and leaves nothing behind.
    """
    sam = build_sam2(config, image_size=image_size)
    raw = read_checkpoint(sam2_checkpoint, "SAM2 checkpoint")
    state = dict(check_sam2_state_dict(raw, sam, sam2_checkpoint, config))
    layout = {}
    if adapter_checkpoint is not None:
        adapters = read_checkpoint(adapter_checkpoint, "SANSA adapter checkpoint")
        layout = adapter_layout(adapters, sam, adapter_checkpoint)
        state.update({k.removeprefix("sam."): v for k, v in adapters.items()})
    inject_adapters(sam, layout)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # checked above; this would be a bug, said plainly
        raise CheckpointError(f"could not load the weights into {config}: {exc}") from None
    for p in sam.parameters():
        p.requires_grad_(False)
    return sam.eval()


def load_model(name: str | None = None, **options) -> SansaModel:
    """Load SANSA, by registry name or from local files.

    * ``load_model("sansa-universal")``: a registered model (see
      :func:`napari_sansa.list_models`), downloaded into the cache on first use
      unless ``download=False``.
    * ``load_model(config="sam2_hiera_l", sam2_checkpoint=..., adapter_checkpoint=...)``:
      local files in Meta's and the authors' formats. Without ``adapter_checkpoint``
      the model is plain SAM2 (the zero-shot baseline). ``config`` may be left out
      when the SAM2 file tells its size.

    The options (``device``, ``precision``, ``image_size``, ``cache_bytes``,
    ``cache_dir``, ``cache_dir_bytes``, ``result_cache_bytes``, ``compile``,
    ``download``, ``threads``) are the fields of
    :class:`~napari_sansa.core.models.settings.ModelSettings`,
    which documents them.
    """
    return load_settings(ModelSettings.from_options(name=name, **options))


def _signature_of_load_model():
    """``load_model(name, **options)`` shows the options it takes: ModelSettings' fields."""
    import dataclasses
    import inspect

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    params += [
        inspect.Parameter(f.name, kw, default=f.default, annotation=f.type)
        for f in dataclasses.fields(ModelSettings)
        if f.name != "name"
    ]
    return inspect.Signature(params, return_annotation="SansaModel")


load_model.__signature__ = _signature_of_load_model()


def load_settings(settings: ModelSettings) -> SansaModel:
    """The model ``settings`` describe (what :func:`load_model` and
    :class:`~napari_sansa.core.models.cache.ModelCache` run)."""
    name, config = settings.name, settings.config
    sam2_checkpoint, adapter_checkpoint = settings.sam2_checkpoint, settings.adapter_checkpoint
    dev = resolve_device(settings.device)
    dtype = resolve_precision(settings.precision, dev)
    if name is not None:
        if any(v is not None for v in (config, sam2_checkpoint, adapter_checkpoint)):
            raise InvalidInputError(
                "give either a registered model name or config/sam2_checkpoint/"
                "adapter_checkpoint files, not both"
            )
        from napari_sansa.core.models.registry import get_model_spec, resolve_files

        spec = get_model_spec(name)
        sam2_checkpoint, adapter_checkpoint = resolve_files(spec, download=settings.download)
        config = spec.config
        label = spec.name
    else:
        if sam2_checkpoint is None:
            raise InvalidInputError(
                "give a registered model name (e.g. load_model('sansa-universal')) or the "
                "SAM2 weights file as sam2_checkpoint=..."
            )
        if config is None:
            config = guess_config(read_checkpoint(sam2_checkpoint, "SAM2 checkpoint"))
            if config is None:
                raise InvalidInputError(
                    f"cannot tell the SAM2 size of {sam2_checkpoint}: pass config='sam2_hiera_l' "
                    "(or _t, _s, _b+)"
                )
        config = check_config_name(config)
        label = Path(adapter_checkpoint).stem if adapter_checkpoint is not None else config
    try:
        sam = build_sansa(config, sam2_checkpoint, adapter_checkpoint, settings.image_size)
    except CheckpointError as exc:
        if name is None:
            raise
        raise CheckpointError(
            f"{exc}. The cached weights of {label} are damaged: run `napari-sansa download "
            f"{label} --force` to fetch them again"
        ) from None
    identity = "sam2:" + file_fingerprint(sam2_checkpoint)
    if adapter_checkpoint is not None:
        identity += "+adapters:" + file_fingerprint(adapter_checkpoint)
    # what a dataset run given these settings records: the same for the loaded model
    source_identity = settings.identity((sam2_checkpoint, adapter_checkpoint))
    if settings.compile:
        for part in (sam.image_encoder, sam.memory_attention, sam.sam_mask_decoder):
            part.compile(dynamic=False)
    model = SansaModel(
        sam,
        config=config,
        device=dev,
        dtype=dtype,
        identity=identity,
        name=label,
        settings=settings,
        source_identity=source_identity,
    )
    if dev.type == "cpu" and dtype == torch.bfloat16:  # the CPU's bf16 path (core.cpu_bf16)
        model.engine.hold_encoder_in_bf16()
    return model

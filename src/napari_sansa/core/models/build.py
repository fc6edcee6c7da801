"""Build SAM2 from the ``sam2`` package's own configs, with SANSA's overrides.

SANSA uses SAM2's configs unchanged except for three settings (object-score
prediction off). The package's ``build_sam2`` helper adds post-processing
overrides of its own; SANSA does not use them, so the model is instantiated
here straight from the config file.
"""

from __future__ import annotations

from importlib import resources

from napari_sansa.core.errors import InvalidInputError

__all__ = ["CONFIGS", "SANSA_OVERRIDES", "build_sam2", "check_config_name"]

#: SAM2 config names (the ``sam2`` package's) -> config file inside the package.
CONFIGS: dict[str, str] = {
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

#: The only changes SANSA makes to SAM2's configs.
SANSA_OVERRIDES = {
    "pred_obj_scores": False,
    "pred_obj_scores_mlp": False,
    "fixed_no_obj_ptr": False,
}


def check_config_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidInputError(f"config must be a SAM2 config name, got {name!r}")
    key = name.strip()
    for suffix in (".yaml",):
        key = key.removesuffix(suffix)
    key = key.rsplit("/", 1)[-1]
    if key not in CONFIGS:
        raise InvalidInputError(
            f"unknown SAM2 config {name!r}; use one of: {', '.join(CONFIGS)} "
            "(the released SANSA adapters use sam2_hiera_l)"
        )
    return key


def load_config(name: str, sansa: bool = True):
    """The config's ``model`` node, with SANSA's overrides applied when ``sansa``."""
    from omegaconf import OmegaConf

    key = check_config_name(name)
    text = resources.files("sam2").joinpath(CONFIGS[key]).read_text()
    cfg = OmegaConf.create(text)
    model_cfg = cfg.model
    if sansa:
        for k, v in SANSA_OVERRIDES.items():
            model_cfg[k] = v
    return model_cfg


def build_sam2(name: str, image_size: int | None = None, sansa: bool = True):
    """Instantiate SAM2 (random weights, eval mode, CPU) from a package config.

    ``image_size`` replaces the config's 1024 (tests use small sizes such as 256);
    it must be a multiple of 64. ``sansa=False`` keeps Meta's object-score heads,
    which is what Meta's checkpoint files contain.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    model_cfg = load_config(name, sansa=sansa)
    if image_size is not None:
        if int(image_size) != image_size or image_size < 128 or image_size % 64:
            raise InvalidInputError(
                f"image_size must be a multiple of 64 and at least 128, got {image_size!r}"
            )
        model_cfg.image_size = int(image_size)
    OmegaConf.resolve(model_cfg)
    sam = instantiate(model_cfg, _recursive_=True)
    sam.eval()
    for p in sam.parameters():
        p.requires_grad_(False)
    return sam

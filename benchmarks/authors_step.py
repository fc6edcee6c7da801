"""The authors' own training step (ClaudiaCuttano/SANSA), for bench_finetune.py ``--authors``.

Needs a checkout of their repository (their SAM2 fork is inside it) and ``einops``
importable. Their ``util/misc.py`` imports torchvision and ``models/sansa/sansa.py``
imports ``py3_wget`` (a downloader): neither is used on this path, so both are stubbed
(napari-sansa never imports torchvision). The model is built as their ``build_sansa``
builds it (hydra config with the adapter overrides, object-score heads off, SAM2
weights, then ``resume_from_checkpoint`` for the adapters), and a step is their
``train_one_epoch`` body: ``model.train()``, ``build_prompt_dict``, forward,
``loss_masks`` on the frames of their rule, backward, gradient clipping at 0.1, AdamW,
cosine schedule.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import torch


def _import_authors(repo: Path) -> None:
    sys.modules.setdefault("torchvision", types.SimpleNamespace(__version__="0.22.1"))
    sys.modules.setdefault("py3_wget", types.SimpleNamespace(download_file=None))
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))


def build_authors_model(repo, sam2_path, adapters_path, image_size: int):
    repo = Path(repo).resolve()
    _import_authors(repo)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from models.sansa.sansa import SANSA
    from omegaconf import OmegaConf
    from util.commons import resume_from_checkpoint

    GlobalHydra.instance().clear()
    overrides = [
        "++model.image_encoder.trunk.adaptformer_stages=[2,3]",
        "++model.image_encoder.trunk.adapt_dim=0.3",
        f"++model.image_size={image_size}",
    ]
    configs = str(repo / "models" / "sam2" / "sam2_configs")
    with initialize_config_dir(version_base=None, config_dir=configs):
        cfg = compose(config_name="sam2_hiera_t.yaml", overrides=overrides)
        OmegaConf.resolve(cfg)
        for key in ("pred_obj_scores", "pred_obj_scores_mlp", "fixed_no_obj_ptr"):
            cfg.model[key] = False
        sam = instantiate(cfg.model, _recursive_=True)
    sam.load_state_dict(torch.load(sam2_path, map_location="cpu")["model"], strict=False)
    model = SANSA(sam=sam, device=torch.device("cpu"))
    for name, p in model.named_parameters():
        p.requires_grad = "adapter" in name
    return resume_from_checkpoint(str(adapters_path), model)


class AuthorsRun:
    """Their training step on the episodes ``driver`` (a ``Finetuning`` with the same data
    and seed as the other variants) samples, one per ``next()``."""

    def __init__(self, repo, sam2_path, adapters_path, image_size: int, driver):
        self.model = build_authors_model(repo, sam2_path, adapters_path, image_size)
        self.driver = driver
        head = [p for p in self.model.parameters() if p.requires_grad]
        s = driver.settings
        self.params = head
        self.optimizer = torch.optim.AdamW([{"params": head, "initial_lr": s.lr}], lr=s.lr,
                                           weight_decay=0.0, betas=(0.9, 0.999))  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=s.steps)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        self._norm = lambda rgb: (torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self):
        from util.losses import loss_masks
        from util.promptable_utils import build_prompt_dict

        d = self.driver
        if self.step >= d.settings.steps:
            raise StopIteration
        self.step += 1
        t0 = time.perf_counter()
        shot = int(d.rng.integers(1, d.settings.shots + 1))
        frames, episode = d._sample(shot)  # batch of one episode, as the other variants
        samples = torch.stack([self._norm(d.frames.rgb[j]) for j in frames])[None]
        masks = torch.stack(episode.targets)[None]
        self.model.train()
        prompts = build_prompt_dict(masks, "mask", n_shots=shot, train_mode=True,
                                    device=torch.device("cpu"))  # fmt: skip
        out = self.model(samples, prompts)
        losses = loss_masks(out["pred_masks"], masks, num_frames=samples.shape[1] - 1)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.1)
        self.optimizer.step()
        self.scheduler.step()
        return SimpleNamespace(seconds=time.perf_counter() - t0, loss=float(loss.detach()))

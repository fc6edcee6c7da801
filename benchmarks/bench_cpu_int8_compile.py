"""Do torch.compile or int8 pay on the CPU? (issue 21) Hiera-tiny's image encoder.

Times the image encoder of one SANSA model (random weights, SAM2 Hiera-tiny by default)
on one image, side by side in one run (repeats interleaved, medians), as:

* ``fp32``: eager, as every fp32 run;
* ``compile``: fp32, the encoder compiled with ``torch.compile`` (inductor, ``dynamic=False``,
  what ``load_model(..., compile=True)`` does to it; the compile time is reported apart);
* ``int8 dynamic``: torchao's ``Int8DynamicActivationInt8WeightConfig`` on the encoder's
  linear layers (int8 weights, activations quantized per token at run time): the
  maintained route for what ``torch.ao.quantization.quantize_dynamic`` did;
* ``int8 weights``: torchao's ``Int8WeightOnlyConfig`` (int8 weights, fp32 activations);
* ``bf16``: the CPU's bf16 path (``precision="bf16"``: encoder weights in bf16), for
  comparison.

Each variant's ratio to fp32, and, end to end (``segment`` of 1 reference with 3 classes
and 2 targets) on the same inputs, the largest logit difference to fp32 and the fraction
of label pixels that agree (random weights: reported, not judged against a threshold).
A variant that cannot run (torchao missing, no C++ compiler for inductor) is said.

    .venv/bin/python benchmarks/bench_cpu_int8_compile.py --size 512 --repeats 5
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    images,
    interleaved_medians,
    parser,
    random_model,
    report,
    three_prompt_reference,
)


def _torchao(config_name: str):
    def apply(model):
        import torchao.quantization as q
        from torchao.quantization import quantize_

        quantize_(model.sam.image_encoder, getattr(q, config_name)())

    return apply


def _compile(model):
    model.sam.image_encoder.compile(dynamic=False)


VARIANTS = {
    "compile": ("fp32", _compile),
    "int8 dynamic": ("fp32", _torchao("Int8DynamicActivationInt8WeightConfig")),
    "int8 weights": ("fp32", _torchao("Int8WeightOnlyConfig")),
    "bf16": ("bf16", None),
}


def _args():
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--config", default="sam2_hiera_t")
    p.add_argument("--size", type=int, default=512, help="model input side (512)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--targets", type=int, default=2, help="targets of the end-to-end runs")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which of " + ", ".join(VARIANTS) + " (all; compiling takes minutes)",
    )
    return p.parse_args()


def main():
    args = _args()
    torch.manual_seed(0)
    models, failed, prepare = {}, {}, {}
    models["fp32"] = random_model(args.config, args.size, precision="fp32", cache_bytes=0)
    size = models["fp32"].image_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    chosen = [v.strip() for v in args.variants.split(",") if v.strip() in VARIANTS]
    for name in chosen:
        precision, apply = VARIANTS[name]
        model = random_model(args.config, args.size, precision=precision, cache_bytes=0)
        try:
            t0 = time.perf_counter()
            if apply is not None:
                apply(model)
            with torch.inference_mode():
                model.engine.encode(x)  # the first call: compiles, packs the weights
            prepare[name] = time.perf_counter() - t0
            models[name] = model
        except Exception as exc:  # noqa: BLE001 - said in the report
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
    with torch.inference_mode():
        models["fp32"].engine.encode(x)  # warm-up
    with torch.inference_mode():
        med = interleaved_medians(
            {name: (lambda m=model: m.engine.encode(x)) for name, model in models.items()},
            args.repeats,
        )

    imgs = images(1 + args.targets, shape=(size // 2, size // 2))
    ref = three_prompt_reference(imgs[0])
    preds = {name: model.segment([ref], imgs[1:]) for name, model in models.items()}

    rows = [
        ("config / input", f"{args.config} at {size} px, threads {torch.get_num_threads()}"),
        ("encoder fp32", f"{med['fp32'] * 1e3:.0f} ms (median of {args.repeats})"),
    ]
    results = {"size": size, "threads": torch.get_num_threads(), "encoder_s": med,
               "prepare_s": prepare, "failed": failed, "parity": {}}  # fmt: skip
    for name in chosen:
        if name in failed:
            rows.append((f"encoder {name}", f"did not run: {failed[name]}"))
            continue
        worst, agree = 0.0, []
        for p, q in zip(preds["fp32"], preds[name], strict=True):
            for c in p.logits:
                worst = max(worst, float(np.abs(p.logits[c] - q.logits[c]).max()))
            agree.append(float((p.labels == q.labels).mean()))
        agreement = float(np.mean(agree))
        results["parity"][name] = {"max_logit_diff": worst, "label_agreement": agreement}
        said = (
            f"{med[name] * 1e3:.0f} ms, {med['fp32'] / med[name]:.2f}x fp32 (first call "
            f"{prepare[name]:.1f} s); vs fp32: largest logit difference {worst:.3g}, "
            f"{100 * agreement:.2f}% of label pixels agree"
        )
        rows.append((f"encoder {name}", said))
    report(
        f"torch.compile and int8 on the CPU: {args.config} image encoder at {size} px",
        rows,
        results,
        args.json,
    )


if __name__ == "__main__":
    main()

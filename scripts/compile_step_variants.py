"""One recurrent step of the `atari` (or `small`) model, eager vs three compiled variants, interleaved.

    python scripts/compile_step_variants.py --config atari --calls 20

Variants: eager (oneDNN prepacked linears); compiled with the linears as the opaque oneDNN op
(zerokv's choice); compiled with plain F.linear left to inductor, without and with inductor's
freezing (weights as constants: inductor prepacks them itself, but a weight update then needs a
new compile). Inputs: a random past of W = context_length - 1 tokens for env_num rows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zerokv.bench.configs import CONFIGS
from zerokv.model import linear
from zerokv.model.compiled import RecurrentStep
from zerokv.model.world_model import WorldModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="atari")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--variants", default="eager,onednn-op,inductor,inductor+freezing")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = CONFIGS[args.config]
    model = WorldModel(cfg).eval()
    b, w = cfg.env_num, cfg.context_length - 1
    past = torch.randn(cfg.num_layers, 2, cfg.num_heads, b, w, cfg.head_dim)
    positions = torch.arange(w).expand(b, w).contiguous()
    valid = torch.ones(b, w, dtype=torch.bool)
    actions = torch.randint(cfg.action_space_size, (b,))
    fns, compile_s = {}, {}
    for name in args.variants.split(","):
        step = RecurrentStep(model, compile=False)  # one per variant: its own dynamo cache entry
        if name == "eager":
            fns[name] = step._paged_graph
            continue
        linear.TRACED_ONEDNN = name == "onednn-op"  # guarded by dynamo: set again before each call
        torch._inductor.config.freezing = name.endswith("freezing")
        fn = torch.compile(step._paged_graph, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(actions, past, positions, valid)
        compile_s[name] = time.perf_counter() - t0
        fns[name] = fn
    ref, _ = fns["eager"](actions, past, positions, valid) if "eager" in fns else (None, None)
    times = {n: [] for n in fns}
    with torch.no_grad():
        for i in range(args.calls):
            order = list(fns) if i % 2 == 0 else list(reversed(fns))
            for name in order:
                linear.TRACED_ONEDNN = name == "onednn-op"
                t0 = time.perf_counter()
                out, _ = fns[name](actions, past, positions, valid)
                times[name].append(time.perf_counter() - t0)
                if ref is not None and i == 0:
                    diff = max(float((a - r).abs().max()) for a, r in zip(out, ref, strict=True))
                    print(f"{name}: max |diff| vs eager {diff:.1e}")
    from torch._dynamo.utils import counters

    print(f"recompiles: {sum(counters['recompiles'].values())}")
    base = statistics.median(times[next(iter(fns))])
    for name, ts in times.items():
        ms = 1e3 * statistics.median(ts)
        print(f"{args.config} {name:>20}: {ms:7.2f} ms per step ({1e3 * base / ms:.2f}x of the first), "
              f"compile {compile_s.get(name, 0.0):.1f} s")


if __name__ == "__main__":
    main()

"""UV generator forward speed, batched, per preset (prints a Markdown table).

``complete --method unet`` runs the generator at its training resolution and Poisson-blends the
photo's texels into the upsampled prediction at the unwrap's resolution, so for a 512^2 texture
the network cost is the forward pass at the training size (256^2 by default). Both are reported.

    python benchmarks/bench_generator.py [--batch 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    args = parser.parse_args()

    import torch

    from stages.models.uv_generator import UVGenerator, UVGeneratorConfig
    from stages.train.trainer import PRESETS

    print(f"\nUV generator forward, batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}\n")
    print("| preset | params | ms per map at 256^2 | ms per map at 512^2 |")
    print("|---|---:|---:|---:|")
    for name in args.presets:
        generator = UVGenerator(UVGeneratorConfig.from_dict(PRESETS[name]["generator"])).eval()
        params = sum(p.numel() for p in generator.parameters())
        cells = []
        for size in (256, 512):
            x = torch.rand(args.batch, 3, size, size)
            mask = torch.ones(args.batch, 1, size, size)
            position = torch.rand(args.batch, 3, size, size)
            times = []
            with torch.no_grad():
                generator(x, mask, position)
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    generator(x, mask, position)
                    times.append(time.perf_counter() - start)
            cells.append(f"{statistics.median(times) / args.batch * 1000:.0f}")
        print(f"| {name} | {params / 1e6:.2f} M | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

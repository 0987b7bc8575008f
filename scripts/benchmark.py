"""Speed and memory of the DCFB network on this machine, with MONAI's BasicUNet as a yardstick.

    python scripts/benchmark.py                    # 128^3 and the full MNI grid, both networks
    python scripts/benchmark.py --sizes 128 --repeats 3 --threads 2

Each (network, size, mode) runs in a fresh process so that its peak resident memory (ru_maxrss) is its
own. "forward" is one inference pass (no_grad); "train" is one optimiser step with the bundle's
FusionLoss (forward, loss, backward, Adam). The full grid 197x233x189 is padded to a multiple of 8.
Prints a table; --json writes the figures too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = (197, 233, 189)
TARGETS = {("dcfb", "128", "forward"): (0.7, None), ("dcfb", "128", "train"): (2.5, 3.0), ("dcfb", "full", "forward"): (4.0, None)}


def _padded(shape, multiple=8):
    return tuple(-(-s // multiple) * multiple for s in shape)


sys.path.insert(0, os.path.join(ROOT, "bundle"))  # the bundle's scripts.* package


def _build(name: str):
    if name == "dcfb":
        from scripts.dcfb_net import DCFBNet

        cfg = json.load(open(os.path.join(ROOT, "bundle", "configs", "train.json")))["network_def"]
        return DCFBNet(**{k: v for k, v in cfg.items() if k != "_target_"})
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=2, out_channels=1, features=(16, 16, 32, 64, 128, 16))


def measure_one(name: str, size: str, mode: str, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from scripts.losses import FusionLoss

    shape = (128, 128, 128) if size == "128" else _padded(FULL)
    net = _build(name)
    x = torch.rand((1, 2) + shape)
    times = []
    if mode == "forward":
        net.eval()
        with torch.no_grad():
            for _ in range(repeats + 1):
                start = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - start)
    else:
        net.train()
        loss_fn = FusionLoss()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        for _ in range(repeats + 1):
            start = time.perf_counter()
            optimizer.zero_grad()
            pred = torch.sigmoid(net(x)) if name == "basicunet" else net(x)
            loss_fn(pred, x).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    best = min(times[1:])  # the first pass warms up oneDNN kernels
    return {"network": name, "size": size, "shape": list(shape), "mode": mode, "seconds": best,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "parameters": sum(p.numel() for p in net.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["128", "full"], choices=["128", "full"])
    parser.add_argument("--networks", nargs="+", default=["dcfb", "basicunet"], choices=["dcfb", "basicunet"])
    parser.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        print(json.dumps(measure_one(*args._one, args.repeats, args.threads)))
        return
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            for name in args.networks:
                print(f"[benchmark] {name} {mode} at {size} ...", file=sys.stderr, flush=True)
                proc = subprocess.run([sys.executable, __file__, "--_one", name, size, mode, "--repeats",
                                       str(args.repeats), "--threads", str(args.threads)], capture_output=True, text=True)
                if proc.returncode != 0:
                    rows.append({"network": name, "size": size, "mode": mode, "error": proc.stderr.strip().splitlines()[-1:]})
                    continue
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\nthreads: {args.threads}, best of {args.repeats} after one warm-up\n")
    print(f"{'network':<10} {'params':>9} {'size':<12} {'mode':<8} {'seconds':>8} {'peak GB':>8} {'vs BasicUNet':>13} {'target':>14}")
    for r in rows:
        if "error" in r:
            print(f"{r['network']:<10} {'':>9} {r['size']:<12} {r['mode']:<8} failed: {r['error']}")
            continue
        ref = next((o for o in rows if o.get("network") == "basicunet" and o["size"] == r["size"]
                    and o["mode"] == r["mode"] and "error" not in o), None)
        ratio = f"{r['seconds'] / ref['seconds']:.2f}x" if ref and r["network"] != "basicunet" else ""
        target = TARGETS.get((r["network"], r["size"], r["mode"]))
        target_text = ""
        if target:
            ok = r["seconds"] <= target[0] and (target[1] is None or r["peak_gb"] <= target[1])
            target_text = f"<={target[0]}s" + (f",{target[1]}GB" if target[1] else "") + (" ok" if ok else " MISSED")
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['network']:<10} {r['parameters']:>9,} {shape:<12} {r['mode']:<8} {r['seconds']:>8.2f} "
              f"{r['peak_gb']:>8.2f} {ratio:>13} {target_text:>14}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

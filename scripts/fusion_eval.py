"""One command for evaluating fusion methods; the library behind it is ``scripts/dcfb_eval/``.

    .venv/bin/python scripts/fusion_eval.py SUBCOMMAND --help

Subcommands (each module's docstring says more):
    compare    baselines and TorchScript models on a datalist split, every metric; per-case CSV and summary
    fronts     the network over its PET emphasis and global blends over the MRI share: fronts, default lambda
    gap        the objective of the best global blend, the network and the per-subject optimum; gap closed
    blends     global blends w * MRI + (1 - w) * PET scored for a list of w: where each metric puts its optimum
    breakdown  per-source PSNR, SSIM and VIF and the global least-squares MRI share of each method
    optimum    what F a loss asks for: F optimised directly under the paper's or the bundle's loss
    tradeoff   points of loss-weight sweeps as curves of one metric against another
    report     the markdown report with tables and pictures from a compare run
    views      tri-planar pictures of a normal and an Alzheimer-like case for given models (e.g. three lambdas)
    seeds      groups of models trained with several seeds (from a fronts run): mean and spread over the seeds

A bad argument or input is one line on stderr naming it, and exit status 2.
"""

from __future__ import annotations

import os
import sys

import fire

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dcfb_eval import blends, breakdown, compare, fronts, gap, optimum, report, seeds, tradeoff  # noqa: E402

COMMANDS = {"compare": compare.main, "fronts": fronts.main, "gap": gap.main, "blends": blends.main,
            "breakdown": breakdown.main, "optimum": optimum.main, "tradeoff": tradeoff.main, "report": report.main,
            "views": report.views, "seeds": seeds.main}


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        # a table or a path is printed; a result the subcommand already printed (gap's dict) is not
        fire.Fire(COMMANDS, serialize=lambda result: result if isinstance(result, str) else None)
    except (ValueError, FileNotFoundError) as err:
        print(f"fusion_eval {name}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

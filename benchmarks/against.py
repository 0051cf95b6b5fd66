"""Run a benchmark on this tree and on an earlier commit, alternately, in one run.

    .venv/bin/python benchmarks/against.py REV benchmarks/stores.py [its arguments…]
    .venv/bin/python benchmarks/against.py HEAD~3 benchmarks/engine.py --tiles 4 --rounds 2

The earlier commit is checked out into a temporary git worktree and imported from its `src/`
(PYTHONPATH, which wins over the editable install); the benchmark script is this tree's, so both
sides are measured the same way (it may only use what both versions have). Rounds alternate
(this tree, REV, this tree, REV …) so that a machine that gets busier or quieter during the run
weighs on both alike. Each round's output is printed as the benchmark wrote it, under a header.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="the earlier commit (any git revision)")
    parser.add_argument("script", help="the benchmark, e.g. benchmarks/stores.py")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per side")
    args, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="superscale-against-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.rev],
            check=True,
            capture_output=True,
        )
        try:
            sides = [("this tree", None), (args.rev, tree / "src")]
            for round_ in range(1, args.rounds + 1):
                for name, src in sides:
                    env = dict(os.environ)
                    if src is not None:
                        env["PYTHONPATH"] = os.pathsep.join(
                            p for p in (str(src), env.get("PYTHONPATH", "")) if p
                        )
                    print(f"\n===== round {round_}: {name} =====", flush=True)
                    subprocess.run(
                        [sys.executable, str(ROOT / args.script), *rest], env=env, check=True
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    main()

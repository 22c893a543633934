r"""Gathers result folders into one markdown table per paper table.

    python benchmarks/report.py                      # everything under results/
    python benchmarks/report.py results/ood results/ogb_mol --out report.md

Rows are (backbone, method), columns each dataset's mean ± std over seeds
(number of seeds in brackets) next to the paper's number. Results of
``--quick`` runs are left out unless ``--include-quick`` is given, and so
are the runs of hyperparameter sweeps (``benchmarks/sweep.py``: a folder with
a ``study.db``) found below a folder given here; name a sweep's ``confirm``
folder to report its confirmation.
"""
import argparse
import sys
from pathlib import Path

from pyg_hma.study.tables import report_markdown
from pyg_hma.train.results import find_results, in_sweep, load_paper


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog='report.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folders', nargs='*', type=Path,
                        default=[Path('results')],
                        help='result folders or files (default: results)')
    parser.add_argument('--out', type=Path, help='also write the report here')
    parser.add_argument('--include-quick', action='store_true',
                        help='include --quick smoke runs')
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.exists()]
    if missing:
        parser.error(f"no such folder or file: {', '.join(missing)}")
    skipped, duplicates = [], []
    records = [r for r in find_results(args.folders, skipped, duplicates)
               if (args.include_quick or not r.get('quick'))
               and not in_sweep(r['_path'], args.folders)]
    for path, reason in skipped:
        print(f'skipped {path}: {reason}', file=sys.stderr)
    for path, first in duplicates:
        print(f'counted once: {path} is the same run as {first}',
              file=sys.stderr)
    if not records:
        print(f"No results found under {', '.join(map(str, args.folders))}"
              + ('' if args.include_quick else
                 ' (quick runs are skipped; see --include-quick)'),
              file=sys.stderr)
        return 1
    text = report_markdown(records, load_paper())
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

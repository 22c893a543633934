r"""Gathers result folders into one markdown table per paper table.

    python benchmarks/report.py                      # everything under results/
    python benchmarks/report.py results/ood results/ogb_mol --out report.md

Rows are (backbone, method), columns each dataset's mean ± std over seeds
(number of seeds in brackets) next to the paper's number. Results of
``--quick`` runs are left out unless ``--include-quick`` is given, and so
are the runs of hyperparameter sweeps (``benchmarks/sweep.py``: a folder with
a ``study.db``) found below a folder given here; name a sweep's ``confirm``
folder to report its confirmation.

The report never averages what it cannot trust: a result file that cannot
be read (truncated or corrupt JSON; ``--skip-unreadable`` reports without
them, naming each), two files of one run with different scores, two runs
of one configuration and seed, or a non-finite score stop it with one line
naming the files (exit status 2), and so does an ``--out`` that cannot be
written (checked before anything is printed).
"""
import argparse
import os
import sys
from pathlib import Path

from pyg_hma.extras import needs_extra
from pyg_hma.files import atomic_path

with needs_extra('benchmarks', what='the report'):  # one line, exit 2
    from pyg_hma.study.integrity import IntegrityError, check_records
    from pyg_hma.study.tables import report_markdown
    from pyg_hma.train.results import find_results, in_sweep, load_paper


def out_problem(out: Path):
    r"""Why :obj:`out` cannot be written (``None``: it can), judged
    without creating anything."""
    if out.is_dir():
        return 'is a folder'
    parent = out.parent.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f'{parent} is not a folder'
    if not os.access(parent, os.W_OK | os.X_OK):
        return f'{parent} is not writable'
    if out.exists() and not os.access(out, os.W_OK):
        return 'is not writable'
    return None


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
    parser.add_argument('--skip-unreadable', action='store_true',
                        help='report without the result files that cannot '
                        'be read (each named); by default they stop the '
                        'report')
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.exists()]
    if missing:
        parser.error(f"no such folder or file: {', '.join(missing)}")

    def error(message) -> int:
        print(f'report.py: error: {message}', file=sys.stderr)
        return 2
    problem = args.out is not None and out_problem(args.out)
    if problem:
        return error(f'--out {args.out} cannot be written ({problem}); '
                     f'choose another file')
    skipped, duplicates, conflicts = [], [], []
    records = find_results(
        args.folders, skipped, duplicates, conflicts,
        leave_out=lambda rec, path: (
            'a --quick run' if not args.include_quick and rec.get('quick')
            else "a sweep's run" if in_sweep(path, args.folders) else None))
    if skipped and not args.skip_unreadable:
        return error(f'{len(skipped)} result file(s) cannot be read ('
                     + '; '.join(f'{p}: {why}' for p, why in skipped[:4])
                     + (f'; and {len(skipped) - 4} more'
                        if len(skipped) > 4 else '')
                     + '); fix or move them aside, or give --skip-unreadable')
    try:
        check_records(records, conflicts)
    except IntegrityError as e:
        return error(e)
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
    if args.out is not None:  # written before anything is printed
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.out) as tmp:
                tmp.write_text(text)
        except OSError as e:
            return error(f'--out {args.out} cannot be written '
                         f'({e.strerror or e})')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

r"""The reproduction study's committed results and its report.

    python benchmarks/reproduction.py collect results/study/ood   # add finished runs to results/paper/runs.csv
    python benchmarks/reproduction.py sweeps results/study/sweeps # sweep summaries + their confirmation runs
    python benchmarks/reproduction.py report                      # docs/reproduction.md + docs/figures/ from runs.csv

``collect`` turns every finished (non-quick) run's JSON below the folders
into rows of ``results/paper/runs.csv`` (one per run and eval setting; rows
already there are never changed) and their per-epoch curves into
``results/paper/curves.csv``; it names every file it skips and why (broken
or truncated JSON, a quick run, a sweep's run, a copy of a run). ``sweeps``
copies each sweep's summary (``best.json``, also of an unfinished sweep) to
``results/paper/sweeps/DATASET-METHOD.json`` when it holds more than the
copy there, and collects its confirmation runs as ``tuned`` rows.
``report`` regenerates the report from the committed CSVs, the sweep
summaries in ``results/paper/sweeps/`` (copies of sweeps' ``best.json``)
and the paper's numbers, and the README's HMA-against-ERM table (between
its two marker lines) from the report; it trains nothing. Rows that disagree (same key,
other values) or a non-finite score stop ``collect``, ``sweeps`` and
``report`` with one line naming them (exit status 2), writing nothing. See
:mod:`pyg_hma.study.rows` for the columns and :mod:`pyg_hma.study.stats`
for the verdict rule.
"""
import argparse
import sys
from pathlib import Path

from pyg_hma.extras import needs_extra

with needs_extra('benchmarks', what='the report'):  # one line, exit 2
    from pyg_hma.study.report import report
    from pyg_hma.study.rows import CONFIGS, collect
    from pyg_hma.study.tuning import collect_sweeps
    from pyg_hma.train.results import RunsFileError, load_paper

RUNS = Path('results/paper/runs.csv')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog='reproduction.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    c = sub.add_parser('collect', help='add finished runs to runs.csv')
    c.add_argument('folders', nargs='+', type=Path,
                   help='result folders (searched recursively)')
    c.add_argument('--config', choices=CONFIGS, default='published',
                   help="the configuration these runs used (default "
                   "published: the runners' protocols)")
    c.add_argument('--runs', type=Path, default=RUNS,
                   help=f'the CSV to add to (default {RUNS})')
    w = sub.add_parser('sweeps', help="commit sweeps' summaries and "
                       'confirmation runs')
    w.add_argument('folders', nargs='+', type=Path,
                   help="sweep output folders, or folders above them")
    w.add_argument('--runs', type=Path, default=RUNS,
                   help=f'the CSV to add to (default {RUNS}); the summaries '
                   'go to sweeps/ beside it')
    r = sub.add_parser('report', help='write the report from runs.csv')
    r.add_argument('--runs', type=Path, default=RUNS,
                   help=f'runs file (default {RUNS})')
    r.add_argument('--out', type=Path, default=Path('docs/reproduction.md'),
                   help='report file (default docs/reproduction.md)')
    r.add_argument('--figures', type=Path, default=Path('docs/figures'),
                   help='figure folder (default docs/figures)')
    r.add_argument('--config', choices=CONFIGS, default='published')
    r.add_argument('--readme', type=Path, default=None,
                   help="the page whose HMA-against-ERM table the report "
                   "rewrites, between its two marker lines (default: the "
                   "README.md above the report's folder, where there is "
                   "one; the published configuration's report only)")
    args = parser.parse_args(argv)
    skipped = []
    try:
        if args.command in ('collect', 'sweeps'):
            missing = [str(f) for f in args.folders if not f.exists()]
            if missing:
                parser.error(f"no such folder: {', '.join(missing)}")
        if args.command == 'sweeps':
            for line in collect_sweeps(args.folders, args.runs, skipped):
                print(line)
        elif args.command == 'collect':
            added, kept = collect(args.folders, args.runs, args.config,
                                  skipped)
            print(f'{args.runs}: {added} rows added, {kept} already there')
        else:
            above = args.out.resolve().parent.parent / 'README.md'
            readme = args.readme or (above if above.is_file() else None)
            if args.config != 'published':
                readme = None
            report(args.runs, load_paper(), out=args.out, config=args.config,
                   figures_dir=args.figures, readme=readme)
            print(f'wrote {args.out} (figures in {args.figures})'
                  + (f' and the table of {readme}' if readme else ''))
    except RunsFileError as e:  # IntegrityError too: rows that disagree
        print(f'reproduction.py: error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # e.g. an --out that cannot be written
        print(f'reproduction.py: error: {e.filename or ""}: '
              f'{e.strerror or e}', file=sys.stderr)
        return 2
    for path, reason in skipped:  # every file not collected, and why
        print(f'skipped {path}: {reason}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())

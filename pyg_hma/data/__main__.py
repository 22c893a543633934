"""``python -m pyg_hma.data prepare --dataset NAME [--root DIR]``,
``python -m pyg_hma.data export --dataset NAME --seeds N --out DIR``,
``python -m pyg_hma.data verify [--root DIR]`` (every processed cache of
the root against the SHA-256 digests recorded when it was built)."""
import json
import sys
import time
from pathlib import Path
from typing import Optional

from ..command_line import OneLineParser
from ..extras import needs_extra
from ..registry import UnknownNameError
from ..files import UnreadableFileError, UnusableFolderError, folder_problem
from .cache import NO_DIGESTS, default_root, verify_root
from .exported import exported_file, save_exported
from .mirror import ChecksumError, MissingDataError
from .registry import DATASETS, available_datasets, load_dataset


def main(argv=None) -> int:
    parser = OneLineParser(prog='python -m pyg_hma.data')
    sub = parser.add_subparsers(dest='command', required=True)
    prep = sub.add_parser('prepare', help='process a dataset into the cache '
                          'and print its statistics and split sizes (check '
                          'the caches later with `verify`)')
    prep.add_argument('--dataset', required=True, nargs='+',
                      help=f"one or more of: {', '.join(available_datasets())}")
    prep.add_argument('--root', default=None, help='cache folder')
    prep.add_argument('--mirror', default=None, help='offline mirror folder')
    prep.add_argument('--seed', type=int, default=0)
    prep.add_argument('--json', action='store_true', help='print JSON only')
    exp = sub.add_parser('export', help='write the processed splits of some '
                         'seeds as plain-tensor files that load with torch '
                         'and PyG only (pyg_hma.data.exported)')
    exp.add_argument('--dataset', required=True, nargs='+')
    exp.add_argument('--seeds', type=int, default=1,
                     help='export seeds 0..N-1 (default 1; at least 1)')
    exp.add_argument('--out', required=True, help='output folder')
    exp.add_argument('--root', default=None, help='cache folder')
    exp.add_argument('--mirror', default=None, help='offline mirror folder')
    sub.add_parser('list', help='list the dataset names')
    ver = sub.add_parser('verify', help="check every processed cache of the "
                         "root against the SHA-256 digests recorded when it "
                         "was built (a cache that fails is rebuilt on its "
                         "next load)")
    ver.add_argument('--root', default=None, help='cache folder')
    args = parser.parse_args(argv)

    if args.command == 'list':
        print('\n'.join(available_datasets()))
        return 0
    if args.command == 'verify':
        return _verify(parser, args)
    problem = _usage_problem(args)  # before any data is loaded
    if problem:
        parser.fail(problem)
    if args.command == 'export':
        return _export(args)
    for name in args.dataset:
        start = time.perf_counter()
        try:
            splits = load_dataset(name, root=args.root, mirror=args.mirror,
                                  seed=args.seed)
        except USER_ERRORS as error:
            # A clear message, not a traceback: these are the user's to fix.
            print(f'error: {name}: {error}', file=sys.stderr)
            return 2
        report = {
            'dataset': splits.name,
            'num_features': splits.num_features,
            'num_classes': splits.num_classes,
            'metric': splits.metric,
            'splits': splits.sizes(),
            **splits.info,
            'seconds': round(time.perf_counter() - start, 2),
        }
        if args.json:
            print(json.dumps(report, default=str))
        else:
            print(f'== {splits.name}')
            for key, value in report.items():
                print(f'  {key}: {value}')
        sys.stdout.flush()
    return 0


#: Failures that are the user's to fix: one line, exit status 2.
USER_ERRORS = (MissingDataError, ChecksumError, UnknownNameError,
               UnreadableFileError, UnusableFolderError)


def _usage_problem(args) -> Optional[str]:
    r"""What is wrong with the command line (names, counts, folders), as
    one line; ``None`` when nothing is."""
    try:
        DATASETS.check(args.dataset, 'dataset')
    except UnknownNameError as e:
        return f'--dataset: {e}'
    if args.command == 'export' and args.seeds < 1:
        return (f'--seeds must be at least 1 (seeds 0..N-1 are exported), '
                f'got {args.seeds}')
    folders = [('--root', args.root, 'the dataset cache folder')]
    if args.command == 'export':
        folders.append(('--out', args.out, 'the folder of exported splits'))
    for option, value, what in folders:
        problem = value is not None and folder_problem(value)
        if problem:
            return (f'{option} {value} cannot be used ({problem}); give '
                    f'{what}, writable')
    if args.mirror is not None and not Path(args.mirror).expanduser() \
            .is_dir():
        return (f'--mirror {args.mirror} is not a folder; point it at the '
                f'offline mirror')
    return None


def _verify(parser, args) -> int:
    r"""``verify``: one line per cache folder; exit status 1 when one
    fails, 2 when the root holds none."""
    root = Path(args.root).expanduser() if args.root else default_root()
    verdicts = verify_root(root) if root.is_dir() else {}
    if not verdicts:
        parser.fail(f'--root {root}: no cache to verify (prepare one with '
                    f'`python -m pyg_hma.data prepare --dataset NAME`)')
    for folder, problem in verdicts.items():
        if problem is None:
            print(f'{folder.name}: OK')
        elif problem == NO_DIGESTS:
            print(f'{folder.name}: not checked (built by an older version '
                  f'that recorded no digests; delete it to rebuild it)')
        else:
            print(f'{folder.name}: FAILED: {problem}; it is rebuilt on its '
                  f'next load (or delete it)')
    return 1 if any(p not in (None, NO_DIGESTS)
                    for p in verdicts.values()) else 0


def _export(args) -> int:
    for name in args.dataset:
        for seed in range(args.seeds):
            try:
                splits = load_dataset(name, root=args.root,
                                      mirror=args.mirror, seed=seed)
                path = save_exported(splits, exported_file(args.out, name,
                                                           seed))
            except USER_ERRORS + (TypeError, ) as error:
                print(f'error: {name}: {error}', file=sys.stderr)
                return 2
            size = path.stat().st_size / 2**20
            print(f'{path} ({size:.1f} MiB; {splits.sizes()})', flush=True)
    return 0


if __name__ == '__main__':
    with needs_extra('benchmarks', what='the datasets'):  # one line, exit 2
        sys.exit(main())

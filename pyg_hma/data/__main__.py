"""``python -m pyg_hma.data prepare --dataset NAME [--root DIR]``,
``python -m pyg_hma.data export --dataset NAME --seeds N --out DIR``"""
import argparse
import json
import sys
import time

from ..registry import UnknownNameError
from ..files import UnreadableFileError
from .mirror import ChecksumError, MissingDataError
from .registry import available_datasets, load_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m pyg_hma.data')
    sub = parser.add_subparsers(dest='command', required=True)
    prep = sub.add_parser('prepare', help='process a dataset into the cache '
                          'and print its statistics and split sizes')
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
                     help='export seeds 0..N-1 (default 1)')
    exp.add_argument('--out', required=True, help='output folder')
    exp.add_argument('--root', default=None, help='cache folder')
    exp.add_argument('--mirror', default=None, help='offline mirror folder')
    sub.add_parser('list', help='list the dataset names')
    args = parser.parse_args(argv)

    if args.command == 'list':
        print('\n'.join(available_datasets()))
        return 0
    if args.command == 'export':
        return _export(args)
    for name in args.dataset:
        start = time.perf_counter()
        try:
            splits = load_dataset(name, root=args.root, mirror=args.mirror,
                                  seed=args.seed)
        except (MissingDataError, ChecksumError, UnknownNameError,
                UnreadableFileError) as error:
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


def _export(args) -> int:
    from .exported import exported_file, save_exported
    for name in args.dataset:
        for seed in range(args.seeds):
            try:
                splits = load_dataset(name, root=args.root,
                                      mirror=args.mirror, seed=seed)
                path = save_exported(splits, exported_file(args.out, name,
                                                           seed))
            except (MissingDataError, ChecksumError, UnknownNameError,
                    UnreadableFileError,
                    TypeError) as error:
                print(f'error: {name}: {error}', file=sys.stderr)
                return 2
            size = path.stat().st_size / 2**20
            print(f'{path} ({size:.1f} MiB; {splits.sizes()})', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

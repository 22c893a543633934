r"""Paper table 3 (OGB molecules) on a lent GPU, in calls of at most ten
minutes: ogbg-molbace, ogbg-molbbbp (then ogbg-molhiv) x GIN, GCN, GIN-v,
GCN-v x ERM, HMA, 10 seeds x 100 epochs (``benchmarks/ogb_mol.py``, OGB's
protocol), each cell's 10 seeds trained as one seed-batched model.

The GPU machine has torch and PyG but no ogb, RDKit or internet, and only
the repository (with the ignored folders a call carries, 64 MiB in all)
travels to it; of its output, at most 8 files of 16 MiB, at most two folders
deep, come back. So the data travel as exported tensors and the results as
one archive, and a cell (10 seeds) is the unit of work: it is started only
when its estimated time fits in what is left of the call, so a call cut short
loses nothing that had finished. Three steps, repeated until every cell is
done::

    # 1. here (CPU): export the data (seed 0: the scaffold split does not
    #    depend on the seed), pack the results so far into .gpu_data/
    python benchmarks/table3_gpu.py prepare
    # 2. on the GPU (device tool: carry .gpu_data, timeout_s 600)
    python3 benchmarks/table3_gpu.py run --budget-s 540
    # 3. here: unpack what came back into results/table3_gpu/ and add its
    #    rows to results/paper/runs.csv
    python benchmarks/table3_gpu.py collect DEVICE_FILES_DIR

``run`` resumes (``--resume``): cells finished in earlier calls are kept,
the others trained in the order molbace, molbbbp, molhiv; within a dataset
GIN, GCN, GIN-v, GCN-v, ERM before HMA. It writes ``table3_results.tar.gz``
(every finished run's JSON and log; no checkpoints) and
``table3_timings.json`` into ``$OUT`` after every cell.

Rehearsal on a CPU (tiny settings, a folder of its own; runner arguments
after ``--``)::

    python benchmarks/table3_gpu.py run --device cpu --seeds 2 \
        --datasets ogbg-molbace --work /tmp/t3 --out /tmp/t3_out \
        -- --epochs 1 --set backbone.hidden_channels=16
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

STARTED = time.monotonic()  # the budget counts from here, imports included
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # pyg_hma, ogb_mol

DATASETS = ('ogbg-molbace', 'ogbg-molbbbp', 'ogbg-molhiv')
BACKBONES = ('gin', 'gcn', 'gin-v', 'gcn-v')
METHODS = ('erm', 'hma')
DATA = Path('.gpu_data')
WORK = Path('results/table3_gpu')
ARCHIVE = 'table3_results.tar.gz'
TIMINGS = 'table3_timings.json'
MANIFEST = 'table3.json'
#: What travels to the device machine: the working tree and carried paths.
TRAVEL_LIMIT = 64 * 2**20
#: What comes back: one file.
RETURN_LIMIT = 16 * 2**20

# Prior estimate of a cell (S seeds as one model) on one H100/H200. The
# seed-batched step is bound by kernel launches there: its aten operations
# (forward, backward and Adam; counted on the CPU for S = 10, OGB's 5 x 300
# GNNs on ogbg-molbace batches of 32) at ~18 us each, the rate at which the
# single-model eager step ran on the H100/H200 (docs/performance.md: 10-13 ms
# for ~550 operations). Per epoch and seed, evaluation at ~5 ms per batch of
# 32 and ~40 ms of bookkeeping (copying the weights out, scores, logs). The
# cells measured in a call replace the scale.
_OPS_PER_STEP = {('gin', 'erm'): 1461, ('gin', 'hma'): 2616,
                 ('gin-v', 'erm'): 2265, ('gin-v', 'hma'): 3865,
                 ('gcn', 'erm'): 1137, ('gcn', 'hma'): 2132,
                 ('gcn-v', 'erm'): 1941, ('gcn-v', 'hma'): 3381}
_MS_PER_OP = 0.018
_TRAIN_EVAL_SIZES = {'ogbg-molbace': (1210, 303),
                     'ogbg-molbbbp': (1631, 408),
                     'ogbg-molhiv': (32901, 8226)}


def prior_seconds(dataset: str, backbone: str, method: str, epochs: int = 100,
                  seeds: int = 10) -> float:
    r"""The prior estimate of one cell's wall time on the GPU."""
    train, evaluate = _TRAIN_EVAL_SIZES[dataset]
    step = _OPS_PER_STEP[backbone, method] * _MS_PER_OP
    epoch = (math.ceil(train / 32) * step
             + seeds * (math.ceil(evaluate / 32) * 5.0 + 40.0)) / 1000
    return epochs * epoch


def say(*lines: str):
    for line in lines:
        print(f'[table3] {line}', flush=True)


# --------------------------------------------------------------------------
# The archive of results
# --------------------------------------------------------------------------

def _result_files(work: Path) -> List[Path]:
    # Finished runs' JSON and their logs; no checkpoints, no hidden folders,
    # no summaries (each invocation rewrites its cell's from its own runs).
    if not work.is_dir():
        return []
    return sorted(
        f for f in work.rglob('seed*')
        if f.is_file() and f.suffix in ('.json', '.log')
        and not any(p.startswith('.') for p in f.relative_to(work).parts))


def pack(work: Path, archive: Path) -> int:
    r"""Writes the results under :obj:`work` to :obj:`archive` (atomically);
    returns the number of runs in it."""
    from pyg_hma.files import atomic_path
    files = _result_files(work)
    with atomic_path(archive) as tmp:
        with tarfile.open(tmp, 'w:gz') as tar:
            for f in files:
                tar.add(f, arcname=str(f.relative_to(work)))
    runs = sum(f.suffix == '.json' for f in files)
    size = archive.stat().st_size
    if size > RETURN_LIMIT:
        say(f'warning: {archive} is {size / 2**20:.1f} MiB, over the '
            f'{RETURN_LIMIT // 2**20} MiB that comes back from the device')
    return runs


def unpack(archive: Path, work: Path) -> int:
    r"""Extracts :obj:`archive` into :obj:`work` (plain files only, nothing
    outside :obj:`work`); returns the number of files."""
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, 'r:gz') as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tar.extractall(work, members=members, filter='data')
    return len(members)


# --------------------------------------------------------------------------
# prepare (CPU)
# --------------------------------------------------------------------------

def _travelling_bytes(data: Path) -> int:
    # Tracked and untracked-not-ignored files of the checkout, plus `data`.
    out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others',
                          '--exclude-standard'], capture_output=True,
                         check=True).stdout.decode()
    files = [Path(f) for f in out.split('\0') if f]
    total = sum(f.stat().st_size for f in files if f.is_file())
    return total + sum(f.stat().st_size for f in data.rglob('*')
                       if f.is_file() and not f.is_symlink())


def prepare(args) -> int:
    from pyg_hma.data import load_dataset
    from pyg_hma.data.exported import exported_file, save_exported
    exported = args.data / 'exported'
    for name in args.datasets:
        path = exported_file(exported, name, 0)
        if path.is_file():
            say(f'{path} exists ({path.stat().st_size / 2**20:.1f} MiB)')
            continue
        save_exported(load_dataset(name, root=args.root, seed=0), path)
        say(f'exported {path} ({path.stat().st_size / 2**20:.1f} MiB)')
    archive = args.data / ARCHIVE
    if _result_files(args.work):
        runs = pack(args.work, archive)
        say(f'packed {runs} finished runs of {args.work} into {archive}')
    datasets = list(args.datasets)
    while True:
        size = _travelling_bytes(args.data)
        if size <= TRAVEL_LIMIT or len(datasets) <= 2:
            break
        dropped = datasets.pop()
        exported_file(exported, dropped, 0).unlink()
        say(f'{dropped} left out: {size / 2**20:.1f} MiB would travel, '
            f'over {TRAVEL_LIMIT // 2**20} MiB')
    size = _travelling_bytes(args.data)
    if size > TRAVEL_LIMIT:
        say(f'error: {size / 2**20:.1f} MiB would travel, over '
            f'{TRAVEL_LIMIT // 2**20} MiB, even without ogbg-molhiv')
        return 1
    (args.data / MANIFEST).write_text(json.dumps(
        {'datasets': datasets}, indent=1) + '\n')
    say(f'{size / 2**20:.1f} MiB travel (limit {TRAVEL_LIMIT // 2**20}); '
        f'datasets: {", ".join(datasets)}',
        'next, on the GPU (carry .gpu_data): python3 benchmarks/'
        'table3_gpu.py run --budget-s 540')
    return 0


# --------------------------------------------------------------------------
# run (GPU)
# --------------------------------------------------------------------------

class OutOfTime(BaseException):
    r"""The call's budget ran out in the middle of a cell."""


def _link_seeds(exported: Path, datasets: Sequence[str], seeds: int):
    # The scaffold split does not depend on the seed: every seed reads the
    # export of seed 0.
    from pyg_hma.data.exported import exported_file
    for name in datasets:
        first = exported_file(exported, name, 0)
        if not first.is_file():
            raise FileNotFoundError(f'{first} is missing: run `python '
                                    f'benchmarks/table3_gpu.py prepare` on '
                                    f'a machine with ogb and RDKit')
        for seed in range(1, seeds):
            link = exported_file(exported, name, seed)
            if not link.exists():
                link.symlink_to(first.name)


def _finished(work: Path, dataset: str, backbone: str, method: str,
              seeds: int) -> bool:
    folder = work / dataset / backbone / method
    return all((folder / f'seed{s}.json').is_file() for s in range(seeds))


def _cells(datasets, backbones, methods) -> List[Tuple[str, str, str]]:
    return [(d, b, m) for d in datasets for b in backbones for m in methods]


def _epochs(runner_args: Sequence[str]) -> int:
    if '--epochs' in runner_args:
        return int(runner_args[list(runner_args).index('--epochs') + 1])
    return 100


def _on_alarm(signum, frame):
    raise OutOfTime


def run(args) -> int:
    import ogb_mol
    start = STARTED
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    datasets = args.datasets
    if datasets is None:
        manifest = args.data / MANIFEST
        datasets = (json.loads(manifest.read_text())['datasets']
                    if manifest.is_file() else list(DATASETS[:2]))
    exported = args.data / 'exported'
    _link_seeds(exported, datasets, args.seeds)
    previous = args.data / ARCHIVE
    if previous.is_file():
        say(f'unpacked {unpack(previous, args.work)} files of earlier '
            f'calls from {previous}')
    epochs = _epochs(args.runner_args)
    timings = {'device': args.device, 'budget_s': args.budget_s,
               'seeds': args.seeds, 'seed_batch': args.seed_batch,
               'epochs': epochs, 'runner_args': args.runner_args,
               'cells': []}
    scale = 1.0
    signal.signal(signal.SIGALRM, _on_alarm)
    status = 0
    for dataset, backbone, method in _cells(datasets, args.backbones,
                                            args.methods):
        cell = f'{dataset} {backbone} {method}'
        done = _finished(args.work, dataset, backbone, method, args.seeds)
        estimate = 0.0 if done else scale * prior_seconds(
            dataset, backbone, method, epochs, args.seeds)
        left = args.budget_s - (time.monotonic() - start)
        record = {'dataset': dataset, 'backbone': backbone,
                  'method': method, 'estimate_s': round(estimate, 1)}
        if estimate > left:
            say(f'{cell}: skipped, needs ~{estimate:.0f} s, {left:.0f} s left')
            timings['cells'].append(dict(record, status='skipped'))
            continue
        argv = ['--dataset', dataset, '--backbone', backbone, '--method',
                method, '--seeds', str(args.seeds), '--seed-batch',
                str(args.seed_batch), '--device', args.device,
                '--exported', str(exported), '--out', str(args.work),
                '--resume', '--no-checkpoints', *args.runner_args]
        say(f'{cell}: {"kept" if done else "training"} '
            f'(estimate {estimate:.0f} s, {left:.0f} s left)')
        tic = time.monotonic()
        signal.alarm(max(1, int(left)))
        try:
            code = ogb_mol.main(argv)
        except SystemExit as error:  # the runner's argument errors
            code = error.code
        except OutOfTime:
            code = 'out of time'
            status = 3
        except Exception as error:  # one cell's failure stops no other
            code = f'{type(error).__name__}: {error}'
            status = 1
        finally:
            signal.alarm(0)
        seconds = time.monotonic() - tic
        record.update(status=('kept' if done else 'finished') if code == 0
                      else f'failed: {code}', seconds=round(seconds, 1))
        if code == 0 and not done:
            scale = seconds / prior_seconds(dataset, backbone, method,
                                            epochs, args.seeds)
            record['scale'] = round(scale, 3)
        elif code != 0 and status == 0:
            status = 1
        timings['cells'].append(record)
        say(f'{cell}: {record["status"]} after {seconds:.0f} s')
        _write_outputs(args.work, out, timings)
        if status == 3:
            break
    _write_outputs(args.work, out, timings)
    trained = [c for c in timings['cells'] if 'scale' in c]
    say(f'{len(trained)} cells trained, '
        f'{sum(c["status"] == "skipped" for c in timings["cells"])} skipped '
        f'in {time.monotonic() - start:.0f} s; results in {out / ARCHIVE}')
    return status


def _write_outputs(work: Path, out: Path, timings: dict):
    from pyg_hma.train.results import write_json
    timings['runs_in_archive'] = pack(work, out / ARCHIVE)
    write_json(out / TIMINGS, timings)


# --------------------------------------------------------------------------
# collect (CPU)
# --------------------------------------------------------------------------

def collect(args) -> int:
    from pyg_hma.study.rows import collect as collect_rows
    source = args.source
    archive = source / ARCHIVE if source.is_dir() else source
    say(f'unpacked {unpack(archive, args.work)} files from {archive} into '
        f'{args.work}')
    timings = archive.parent / TIMINGS
    if timings.is_file():
        for cell in json.loads(timings.read_text())['cells']:
            say(f"  {cell['dataset']} {cell['backbone']} {cell['method']}: "
                f"{cell['status']} ({cell.get('seconds', '-')} s, estimate "
                f"{cell['estimate_s']} s)")
    added, kept = collect_rows([args.work], args.runs, args.config)
    say(f'{args.runs}: {added} rows added, {kept} already there',
        'next call: python benchmarks/table3_gpu.py prepare (packs these '
        'results so that the GPU resumes after them)')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='table3_gpu.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    subs = {}
    for cmd in ('prepare', 'run', 'collect'):
        p = sub.add_parser(cmd)
        p.add_argument('--work', type=Path, default=WORK,
                       help=f'the results folder (default {WORK})')
        if cmd != 'collect':
            p.add_argument('--data', type=Path, default=DATA,
                           help=f'the folder that travels (default {DATA})')
            p.add_argument('--datasets', nargs='+', choices=DATASETS,
                           default=None if cmd == 'run' else list(DATASETS),
                           help='default: all (prepare; molhiv is left out '
                           'when it does not fit), the prepared ones (run)')
        subs[cmd] = p
    subs['prepare'].add_argument('--root', help='dataset cache folder')
    r = subs['run']
    r.add_argument('--out', type=Path,
                   default=Path(os.environ.get('OUT', 'results/table3_out')),
                   help='where the archive and timings go (default $OUT)')
    r.add_argument('--device', default='cuda')
    r.add_argument('--budget-s', type=float, default=540.0,
                   help='start no cell that is not expected to end within '
                   'this many seconds of the start (imports included), and '
                   'stop a cell still '
                   'running then (default 540: a 600 s call with room for '
                   'starting and packing)')
    r.add_argument('--seeds', type=int, default=10)
    r.add_argument('--seed-batch', type=int, default=10)
    r.add_argument('--backbones', nargs='+', default=list(BACKBONES))
    r.add_argument('--methods', nargs='+', default=list(METHODS))
    r.add_argument('runner_args', nargs='*',
                   help='after --: more arguments of benchmarks/ogb_mol.py')
    c = subs['collect']
    c.add_argument('source', type=Path, help=f'the folder the device files '
                   f'came back to (holding {ARCHIVE}), or the archive')
    c.add_argument('--runs', type=Path, default=Path('results/paper/runs.csv'))
    c.add_argument('--config', default='published')
    args = parser.parse_args(argv)
    return {'prepare': prepare, 'run': run, 'collect': collect}[
        args.command](args)


if __name__ == '__main__':
    sys.exit(main())

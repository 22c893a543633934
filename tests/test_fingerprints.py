"""Run fingerprints, checkpoint fingerprints and results' config ids of
existing configurations never change: a study resumes from them and the
committed results/paper/runs.csv rows carry them. The reference values were
computed by the code before the method hyperparameters left TrainConfig
(commit 1e2d646, ``pyg_hma/train/benchmark.py``); the PROTEINS case set
them with ``--set train.*`` then, ``--set method.*`` now. Since seed
batching became the runners' default, the one-at-a-time configurations
were asked for with ``--seed-batch 1``; since every run (a group of one
included) trains with fit_seeds' per-seed streams, those identities belong to
the rows :func:`~pyg_hma.train.fit`'s global stream produced: they are
checked on the run description without ``seed_batched`` (the functions did
not change), and the planned jobs carry the per-seed streams' identity
whatever ``--seed-batch`` says."""
import dataclasses
import pytest
import torch

from pyg_hma.runners import RunSpec, build_parser
from pyg_hma.runners.plan import Printer, plan
from pyg_hma.runners.record import run_config
from pyg_hma.train.engine import (TrainConfig, checkpoint_fingerprint,
                                  fingerprint, train_record)
from pyg_hma.train.results import config_id

from conftest import runner_module as runner

CASES = {
    'cmnist': ('ood', ['--dataset', 'CMNIST', '--method', 'erm', 'irm', 'hma',
                       '--seeds', '0,1', '--seed-batch', '1']),
    'gmixup': ('tu_id', ['--dataset', 'IMDB-BINARY', '--method', 'dropedge',
                         'mmixup', '--seeds', '3', '--seed-batch', '1']),
    'set': ('ood', ['--dataset', 'PROTEINS', '--method', 'vrex', '--seeds',
                    '0-0', '--set', 'method.drop_ratio=0.3', '--set',
                    'method.penalty_weight=10', '--quick', '--seed-batch',
                    '1']),
    'seed_batch': ('ood', ['--dataset', 'NCI1', '--method', 'hma', '--seeds',
                           '0-0', '--seed-batch', '2']),
    # The default: seed-batched, the same configuration as any group size.
    'default': ('ood', ['--dataset', 'NCI1', '--method', 'hma', '--seeds',
                        '0-0']),
}

# case, dataset, method, seed: run fingerprint, checkpoint fingerprint
# (without and with compare_eval_modes), config_id
REFERENCE = [
    ('cmnist', 'CMNIST', 'erm', 0, '1b8be603aa3e9741', 'a3781d2988a1dd13',
     'e5c134bfd65ae001', 'b18754d6'),
    ('cmnist', 'CMNIST', 'irm', 0, '4eb8d612641d03a2', '4373e114837547d1',
     '2076552e875f77fb', '1d3503cf'),
    ('cmnist', 'CMNIST', 'hma', 0, 'd734a6896ceb49c2', '6f3d31635fd2b33b',
     'f833c094cdce7ef0', 'd47e7c08'),
    ('cmnist', 'CMNIST', 'irm', 1, '634c7668eaba7f37', '242d2ead8073eff0',
     '5aa8b1c70b4cf471', '1d3503cf'),
    ('gmixup', 'IMDB-BINARY', 'dropedge', 0, '581391c4aba59a08',
     '48b2273000ce3020', '0127352017280ebb', 'f264438e'),
    ('gmixup', 'IMDB-BINARY', 'mmixup', 2, '72a2968cc2b5a7f9',
     '1522aed22394b703', '9cab33ba4b5aa5d5', '8113381c'),
    ('set', 'PROTEINS', 'vrex', 0, 'fd75e743026d38c2', '3c2cda02db79b738',
     'da47ba4f9271904b', 'c739edb5'),
    ('seed_batch', 'NCI1', 'hma', 0, 'c44eff72c72d89d8', '92b931b3e6f9a3e6',
     '72cab3c7bfb6e1b5', 'aa506586'),
    ('default', 'NCI1', 'hma', 0, 'c44eff72c72d89d8', '92b931b3e6f9a3e6',
     '72cab3c7bfb6e1b5', 'aa506586'),
]


def planned_jobs(case, tmp_path):
    name, argv = CASES[case]
    protocols = runner(name).PROTOCOLS
    args = build_parser(name, protocols).parse_args(
        argv + ['--out', str(tmp_path)])
    cells = plan(RunSpec.from_args(args), name, protocols, tmp_path,
                 torch.device('cpu'), Printer(quiet=True))
    return {(job.method, job.seed): job for cell in cells
            for job in cell.jobs}


@pytest.mark.parametrize('case,dataset,method,seed,ident,ckpt,ckpt_compare,'
                         'cid', REFERENCE)
def test_fingerprints_of_existing_configurations(tmp_path, case, dataset,
                                                 method, seed, ident, ckpt,
                                                 ckpt_compare, cid):
    job = planned_jobs(case, tmp_path)[method, seed]
    assert job.dataset == dataset
    assert job.run_id['seed_batched'] is True
    if '--seed-batch' in CASES[case][1] and case != 'seed_batch':
        # A committed one-at-a-time row (fit's global stream).
        run_id = {k: v for k, v in job.run_id.items() if k != 'seed_batched'}
        job = dataclasses.replace(job, run_id=run_id, ident=fingerprint({
            'run': run_id, 'method': job.method, 'seed': job.seed,
            'train': train_record(job.cfg, job.hyperparameters)}))
    assert job.ident == ident
    for compare, expected in ((False, ckpt), (True, ckpt_compare)):
        assert checkpoint_fingerprint(
            job.method, job.seed, job.cfg, job.run_id, compare,
            hyperparameters=job.hyperparameters) == expected
    built = dict(out_channels=None, input_shape=None,
                 hma_kwargs={**job.proto.hma, 'check_inputs': False})
    rec = {'runner': job.runner, 'dataset': job.dataset,
           'backbone': job.backbone, 'method': job.method,
           'config': run_config(job, built)}
    assert config_id(rec) == cid


def test_seed_batched_checkpoint_fingerprint(tmp_path):
    # fit_seeds' own checkpoint fingerprint (its streams, STREAMS); the run
    # fingerprint is the same whatever --seed-batch says.
    from pyg_hma.train.seed_batch import STREAMS
    protocols = runner('ood').PROTOCOLS
    jobs = []
    for seed_batch in ('2', '1'):
        argv = ['--dataset', 'CMNIST', '--method', 'irm', '--seeds', '0-0',
                '--seed-batch', seed_batch, '--out', str(tmp_path)]
        spec = RunSpec.from_args(
            build_parser('ood', protocols).parse_args(argv))
        jobs.append(plan(spec, 'ood', protocols, tmp_path,
                         torch.device('cpu'), Printer(quiet=True))[0].jobs[0])
    assert [job.ident for job in jobs] == ['f36b2d664ad70016'] * 2
    job = jobs[0]
    assert checkpoint_fingerprint(
        job.method, job.seed, job.cfg, job.run_id, False, STREAMS,
        hyperparameters=job.hyperparameters) == '0201c25a14873a5d'


def test_train_record_keeps_the_former_train_config_layout():
    # The method hyperparameters sit where they were TrainConfig fields.
    record = train_record(TrainConfig(), {'penalty_weight': 10})
    assert list(record) == [
        'epochs', 'batch_size', 'eval_batch_size', 'lr', 'weight_decay',
        'lr_step', 'lr_gamma', 'clip_grad_norm', 'patience', 'warmup', 'loss',
        'penalty_weight', 'penalty_anneal_epochs', 'drop_ratio',
        'mixup_alpha', 'eval_mode']
    assert record['penalty_weight'] == 10
    assert record['drop_ratio'] == 0.2

"""A seed's run is a function of its configuration and seed only: not of the
group it trains in, of evaluation, or of when it was interrupted. In float32,
with dropout on, on the CPU, to the last bit."""
import pytest
import torch

from pyg_hma.models import build_model
from pyg_hma.train import TrainConfig, engine, fit
from pyg_hma.train.seed_batch import SeedAdam, fit_seeds

from pyg_hma.data.registry import DatasetSplits

from conftest import image_model, molecule_model, molecules, proteins_subset


pytestmark = pytest.mark.usefixtures('one_thread')

GROUPS = ([3], [1, 3, 5], [3, 7, 9, 11, 13, 0, 2, 4, 6, 8])


@pytest.fixture(scope='module')
def proteins(tmp_path_factory):
    return proteins_subset(tmp_path_factory, 160, 60)


def graph_model(splits, conv, method, **hma):
    return lambda: build_model(
        conv, method, num_classes=splits.num_classes,
        num_features=splits.num_features,
        backbone_kwargs=dict(hidden_channels=32, num_layers=3, dropout=0.3,
                             pooling='mean'),
        hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=16,
                        dropout=0.1, check_inputs=False, **hma))


def assert_identical(a, b):
    assert a.history == [dict(h, time_s=ha['time_s'])
                         for h, ha in zip(b.history, a.history)]
    assert a.best_state.keys() == b.best_state.keys()
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k]), k


def seed3_in_every_group(model_fn, splits, method, cfg):
    runs = []
    for seeds in GROUPS:
        res = fit_seeds(model_fn, splits, method, cfg, seeds=seeds,
                        group_size=len(seeds), fallback='raise')
        runs.append(res[seeds.index(3)])
    assert [r.extra['seed_batch_group'] for r in runs] == [1, 3, 10]
    for other in runs[1:]:
        assert_identical(runs[0], other)


@pytest.mark.parametrize('conv,method', [
    ('gin', 'erm'), ('gcn', 'hma'), ('gin', 'vrex'), ('gcn', 'dropnode')])
def test_a_seed_trains_the_same_alone_and_in_any_group(proteins, conv,
                                                       method):
    # Every padded group shape, every stacked kernel, the per-seed dropout,
    # environments and DropNode draws: alone = in a group of 3 = of 10.
    cfg = TrainConfig(epochs=2, batch_size=32)
    seed3_in_every_group(graph_model(proteins, conv, method), proteins,
                         method, cfg)


def test_the_reference_readout_trains_seed_batched_in_any_group(proteins):
    # --set hma.style=reference: the released code's readout (its own
    # attention options, random queue of label tokens, divisible writes)
    # runs the same stacked math, never falling back to one seed at a time.
    cfg = TrainConfig(epochs=2, batch_size=32)
    seed3_in_every_group(graph_model(proteins, 'gcn', 'hma',
                                     style='reference'),
                         proteins, 'hma', cfg)


@pytest.mark.parametrize('backbone,method', [('gin-v', 'hma'),
                                             ('gcn-v', 'erm')])
def test_ogb_encoders_train_the_same_in_any_group(backbone, method):
    graphs = molecules(96, seed=3)
    splits = DatasetSplits(name='molecules', train=graphs[:64],
                           val=graphs[64:80], test=graphs[80:],
                           num_features=9, num_classes=2, metric='rocauc')

    model_fn = molecule_model(backbone, method, dropout=0.3, hma_dropout=0.1,
                              residual=True)
    cfg = TrainConfig(epochs=2, batch_size=32, loss='bce',
                      clip_grad_norm=1.0)
    seed3_in_every_group(model_fn, splits, method, cfg)



@pytest.mark.parametrize('backbone,method', [('cnn', 'hma'), ('mlp', 'irm')])
def test_image_nets_train_the_same_in_any_group(backbone, method):
    # Colored-MNIST-like images with two environments, float32: the CNN's
    # per-seed convolutions and its BatchNorm over the seeds' channels.
    from torch.utils.data import TensorDataset
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(96, 2, 8, 8, generator=gen)
    y = torch.randint(0, 2, (96, ), generator=gen)
    env = torch.arange(96) % 2
    splits = DatasetSplits(
        name='toy-images', train=TensorDataset(x, y, env),
        val=TensorDataset(x[:48], y[:48], env[:48]),
        test=TensorDataset(x[:48], y[:48], env[:48]), num_features=128,
        num_classes=2, metric='accuracy', task='image')
    cfg = TrainConfig(epochs=2, batch_size=16, clip_grad_norm=1.0)
    seed3_in_every_group(image_model(backbone, method, hma_dropout=0.1),
                         splits, method, cfg)


@pytest.mark.parametrize('size', [2, 64, 70])
def test_seed_adam_updates_every_seed_as_it_would_alone(size):
    # The fused kernel's scalar tail rounds unlike its vector body: a
    # 2-element bias alone is all tail, as the first seed of ten all body.
    # SeedAdam hands the kernel each seed's slice as its own tensor, or the
    # stacked tensor whole where every seed's slice is whole vectors (64).
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        base = torch.randn(size, generator=gen)
        grads = [torch.randn(size, generator=gen)
                 * 10 ** float(torch.randint(-4, 1, (), generator=gen))
                 for _ in range(4)]
        out = []
        for S, pos in ((1, 0), (10, 0), (10, 9), (3, 1)):
            p = torch.randn(S, size, generator=gen)
            p[pos] = base
            p.requires_grad_(True)
            opt = SeedAdam([p], lr=1e-3, weight_decay=1e-4)
            for g in grads:
                p.grad = torch.randn(S, size, generator=gen)
                p.grad[pos] = g
                opt.step()
            out.append(p.detach()[pos])
        for other in out[1:]:
            assert torch.equal(out[0], other)
    # Its state has torch's Adam format: one step count, stacked moments.
    state = opt.state_dict()['state'][0]
    assert state['step'].dim() == 0 and int(state['step']) == 4
    assert state['exp_avg'].shape == (3, size)


def test_a_kill_between_two_seeds_checkpoints_changes_nothing(
        proteins, tmp_path, monkeypatch):
    # Killed after seed 0 wrote epoch 2 and before seed 1 did: on --resume
    # seed 1 catches up alone, and both runs are the uninterrupted ones.
    cfg = TrainConfig(epochs=3, batch_size=32)
    model_fn = graph_model(proteins, 'gcn', 'hma')
    full = fit_seeds(model_fn, proteins, 'hma', cfg, seeds=[0, 1],
                     checkpoint_dir=tmp_path / 'full')
    save, saves = engine.Checkpointer.save, []

    def killed(self, state):
        saves.append((self.path.name, state['epoch']))
        if len(saves) > 3:  # seed0 e1, seed1 e1, seed0 e2; then killed
            raise KeyboardInterrupt
        save(self, state)
    monkeypatch.setattr(engine.Checkpointer, 'save', killed)
    with pytest.raises(KeyboardInterrupt):
        fit_seeds(model_fn, proteins, 'hma', cfg, seeds=[0, 1],
                  checkpoint_dir=tmp_path / 'cut')
    monkeypatch.setattr(engine.Checkpointer, 'save', save)
    resumed = fit_seeds(model_fn, proteins, 'hma', cfg, seeds=[0, 1],
                        checkpoint_dir=tmp_path / 'cut', resume=True)
    assert [r.resumed_from for r in resumed] == [3, 2]
    for a, b in zip(full, resumed):
        assert_identical(a, b)


def test_scoring_never_moves_the_training_stream(proteins):
    # fit (one run at a time: --ddp, and models seed batching cannot
    # stack) draws dropout from the global generator; scoring more
    # (compare_eval_modes, here HMA's shuffled and ordered batch inference)
    # must not shift the draws of the next epoch.
    cfg = TrainConfig(epochs=3, batch_size=32)
    model_fn = graph_model(proteins, 'gcn', 'hma')
    plain = fit(model_fn, proteins, 'hma', cfg, seed=1)
    compared = fit(model_fn, proteins, 'hma', cfg, seed=1,
                   compare_eval_modes=True)
    assert [h['train_loss'] for h in plain.history] == \
        [h['train_loss'] for h in compared.history]
    assert [h['test'] for h in plain.history] == \
        [h['test'] for h in compared.history]
    for k in plain.best_state:
        assert torch.equal(plain.best_state[k], compared.best_state[k]), k

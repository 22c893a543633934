"""The library does not depend on the checkout's layout: its wheel, installed
into a fresh virtual environment, works from a folder outside the checkout."""
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TRAIN_ONE_STEP = textwrap.dedent('''
    import sys, torch, pyg_hma
    from torch_geometric.data import Batch, Data
    from pyg_hma import HMAReadout
    from pyg_hma.models import build_model
    assert pyg_hma.__file__.startswith(sys.argv[1]), pyg_hma.__file__
    torch.manual_seed(0)
    graphs = [Data(x=torch.randn(4, 3), y=torch.tensor([i % 2]),
                   edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]))
              for i in range(8)]
    batch = Batch.from_data_list(graphs)
    model = build_model('gcn', 'hma', num_classes=2, num_features=3,
                        backbone_kwargs=dict(hidden_channels=8, num_layers=2),
                        hma_kwargs=dict(memory_size=8, slots_per_class=2,
                                        label_dim=8))
    opt = torch.optim.Adam(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(batch, y=batch.y),
                                             batch.y)
    loss.backward()
    opt.step()
    assert isinstance(model.readout, HMAReadout)
    assert int((model.readout.queue_labels >= 0).sum()) == 8
    print('trained one step, loss', float(loss))
''')


@pytest.mark.skipif(sys.platform == 'win32', reason='POSIX paths')
def test_wheel_works_outside_the_checkout(tmp_path):
    wheels = tmp_path / 'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                    '--no-build-isolation', '-q', '-w', str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    wheel, = wheels.glob('pyg_hma-*.whl')
    env_dir = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(env_dir)], check=True)
    python = env_dir / 'bin' / 'python'
    site = Path(subprocess.run(
        [str(python), '-c', 'import sysconfig; '
         'print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (torch, PyG, ...) come from this environment's
    # site-packages through a .pth line; .pth files there are not processed,
    # so this checkout's editable install is not visible.
    (site / 'deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps',
                    '-q', '--target', str(site), str(wheel)], check=True,
                   capture_output=True)
    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('PYG_HMA_') and k != 'PYTHONPATH'}
    run = dict(cwd=outside, env=env, capture_output=True, text=True,
               timeout=600)
    res = subprocess.run([str(python), '-c', TRAIN_ONE_STEP, str(site)],
                         **run)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'trained one step' in res.stdout
    res = subprocess.run([str(python), '-m', 'pyg_hma.data', 'list'], **run)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'NCI1' in res.stdout.split() and 'ogbg-molhiv' in res.stdout
    # No mirror is found from outside a checkout: the usual download (or
    # --mirror) is what a real user gets, never a path derived from the
    # installed package.
    res = subprocess.run([str(python), '-c', 'from pyg_hma.data import '
                          'find_mirror; print(find_mirror())'], **run)
    assert res.stdout.strip() == 'None', res.stdout
    # The runners' protocols are package data: the wheel runs them without
    # a checkout's benchmarks/ folder.
    res = subprocess.run([str(python), '-m', 'pyg_hma.runners.protocols.ood',
                          '--help'], **run)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'NCI1' in res.stdout and "CIGA's scripts" in res.stdout
    res = subprocess.run([str(python), '-c', 'from pyg_hma.runners.protocols '
                          'import runner_protocols; print(sorted('
                          'runner_protocols()))'], **run)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'ogbg-molhiv' in res.stdout and 'IMDB-BINARY' in res.stdout

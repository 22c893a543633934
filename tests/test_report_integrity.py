"""The report's integrity: multiple comparisons (Holm), power, rows that
disagree or are not finite, the code and command of every cell, bad inputs
on the study's commands, and the study's cell beside a new run's summary."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from test_reproduction import ERM, HMA, modes, record

from pyg_hma.study.integrity import IntegrityError
from pyg_hma.study.report import (TABLE_BEGIN, TABLE_END, report_markdown,
                                  with_hma_table)
from pyg_hma.study.rows import collect, rows_of_result
from pyg_hma.study.stats import detectable_difference, holm, paired_power
from pyg_hma.train.results import (RUNS_COLUMNS, read_runs, write_json,
                                   write_summary)

ROOT = Path(__file__).resolve().parents[1]
ENV = {'PATH': '/usr/bin:/bin', 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1',
       'PYTHONPATH': str(ROOT)}


def script(name, *args, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / 'benchmarks' / name),
                           *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**ENV, **(env or {})}, timeout=600)


def one_line_error(res, prog):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{prog}: error:'), \
        res.stderr
    assert 'Traceback' not in res.stderr
    return lines[0]


def table_rows(text, start):
    return [line for line in text.splitlines() if line.startswith(start)]


# --------------------------------------------------------------------------
# Multiple comparisons and power


def holm_step_down(pvalues, alpha):
    # Holm's procedure as a test: reject the smallest p while p_(i) <=
    # alpha / (m - i + 1), stop at the first that is not.
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = set()
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        rejected.add(i)
    return rejected


def test_holm_matches_the_step_down_procedure_and_scipy_bounds():
    import numpy as np
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 46):
        for _ in range(20):
            p = list(rng.uniform(0, 0.2, m) ** 2)
            adjusted = holm(p)
            # An adjusted p below alpha <=> Holm's procedure rejects at
            # alpha, for every alpha.
            for alpha in (0.001, 0.01, 0.05, 0.1):
                assert {i for i, a in enumerate(adjusted) if a <= alpha} \
                    == holm_step_down(p, alpha)
            # Between Benjamini-Hochberg (scipy) and Bonferroni.
            bh = stats.false_discovery_control(p, method='bh')
            assert all(b <= a + 1e-12 <= min(1.0, m * q) + 2e-12
                       for a, b, q in zip(adjusted, bh, p))
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_detectable_difference_has_80_percent_power_by_scipy():
    for n, sd in ((5, 2.0), (8, 1.0), (10, 0.03), (30, 0.05)):
        d = detectable_difference(n, sd)
        crit = stats.t.ppf(0.975, n - 1)

        def power(delta):  # two-sided paired t, noncentral t (scipy)
            nc = delta / sd * math.sqrt(n)
            return stats.nct.sf(crit, n - 1, nc) + \
                stats.nct.cdf(-crit, n - 1, nc)
        assert power(d) == pytest.approx(0.8, abs=1e-6)
        assert power(0.98 * d) < 0.8 < power(1.02 * d)
        assert paired_power(n, d / sd) == pytest.approx(power(d))
    # G*Power's numbers: effect 0.9962 sd for 10 pairs, 1.6818 for 5.
    assert detectable_difference(10, 1.0) == pytest.approx(0.9962, abs=1e-3)
    assert detectable_difference(5, 2.0) == pytest.approx(2 * 1.6818,
                                                          abs=2e-3)
    assert detectable_difference(5, 0.0) == 0.0
    assert math.isnan(detectable_difference(1, 1.0))


DIFFS = [0.03, 0.01, 0.05, 0.02, 0.04]  # raw paired p about 0.013


def four_datasets(folder):
    for ds in ('NCI1', 'NCI109', 'DD', 'PROTEINS'):
        for seed, (e, d) in enumerate(zip(ERM, DIFFS)):
            write_json(folder / f'{ds}/erm/seed{seed}.json', record(
                'erm', seed, e, dataset=ds, run_fingerprint=f'{ds}e{seed}'))
            write_json(folder / f'{ds}/hma/seed{seed}.json', record(
                'hma', seed, e + d, dataset=ds,
                run_fingerprint=f'{ds}h{seed}'))


def four_dataset_runs(tmp_path):
    r"""The runs.csv that :func:`four_datasets`' runs collect into."""
    four_datasets(tmp_path / 'r')
    runs = tmp_path / 'runs.csv'
    collect([tmp_path / 'r'], runs)
    return runs


NCI1_PAPER = [dict(table='6', metric='mcc', dataset='NCI1', backbone='',
                   method=m, mean=v, std='0.01') for m, v in
              (('ERM', '0.15'), ('HMA', '0.19'))]


def test_paired_p_values_are_adjusted_over_the_whole_report(tmp_path):
    runs = four_dataset_runs(tmp_path)
    text = report_markdown(read_runs(runs), None)
    rows = table_rows(text, '| ')
    paired = [r.split(' | ') for r in rows
              if ' − ERM | ' in r and not r.startswith('| table |')]
    assert len(paired) == 4
    raw = [float(r[4]) for r in paired]
    exact = [stats.ttest_rel([e + d for e, d in zip(ERM, DIFFS)],
                             ERM).pvalue] * 4
    assert raw == pytest.approx(exact, abs=1e-3)
    assert [float(r[5]) for r in paired] == pytest.approx(holm(exact),
                                                          abs=1e-3)
    assert all(p < 0.05 for p in raw) and all(float(r[5]) > 0.05
                                              for r in paired)
    # At a glance follows the adjusted values: each 95% interval lies above
    # zero, yet no dataset counts as better once the 4 tests are adjusted.
    glance = next(r for r in rows if r.startswith('| Table 6'))
    assert glance.endswith('| 0 / 4 / 0 (0 in the paper) |')
    assert "Holm's step-down rule" in text and text.count(
        "Holm's step-down rule") == 1  # the rule, stated once


def test_each_paired_comparison_states_its_detectable_difference(tmp_path):
    runs = four_dataset_runs(tmp_path)
    text = report_markdown(read_runs(runs), NCI1_PAPER)
    row = next(r for r in table_rows(text, '| NCI1 | GCN | HMA − ERM'))
    cells = [c.strip() for c in row.split('|')[1:-1]]
    sd = stats.tstd(DIFFS)
    assert cells[6] == '+0.040'  # the paper's claimed gain ...
    assert float(cells[7]) == pytest.approx(detectable_difference(5, sd),
                                            abs=1e-3)  # ... beside it
    assert 'detectable (80% power)' in text


def test_hma_against_erm_pairs_the_cells_beside_the_papers_difference(
        tmp_path):
    runs = four_dataset_runs(tmp_path)
    text = report_markdown(read_runs(runs), NCI1_PAPER)
    rows = {r.split(' | ')[1]: [c.strip() for c in r.split('|')[1:-1]]
            for r in table_rows(text, '| 6 | ')}
    assert sorted(rows) == ['DD', 'NCI1', 'NCI109', 'PROTEINS']
    nci1 = rows['NCI1']
    hma = [e + d for e, d in zip(ERM, DIFFS)]
    assert nci1[3] == f'{stats.tmean(ERM):.3f} ± {stats.tstd(ERM):.3f} (5)'
    assert nci1[4] == f'{stats.tmean(hma):.3f} ± {stats.tstd(hma):.3f} (5)'
    low, high = stats.t.interval(0.95, 4, loc=0.03, scale=stats.sem(DIFFS))
    assert nci1[5] == f'+0.030 [{low:+.3f}, {high:+.3f}] (5)'
    # The paper's +0.040 lies inside [+0.010, +0.050]; 4 tests adjusted
    # together leave no dataset better.
    assert nci1[8:] == ['+0.040', 'yes', 'no difference']
    assert rows['DD'][8:] == ['-', '-', 'no difference']  # no paper number


README_PAGE = ('# A page\n\nBefore.\n\n' + TABLE_BEGIN + '\n| stale |\n'
               + TABLE_END + '\n\nAfter.\n')


def test_report_writes_the_readme_table_between_its_markers(tmp_path):
    runs = four_dataset_runs(tmp_path)
    readme = tmp_path / 'README.md'  # the page above the report's folder
    readme.write_text(README_PAGE)
    out = tmp_path / 'docs/reproduction.md'
    args = ['report', '--runs', runs, '--out', out, '--figures',
            tmp_path / 'docs/figures']
    res = script('reproduction.py', *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    page = readme.read_text()
    table = table_rows(out.read_text(), '| 6 | ')
    assert len(table) == 4
    assert page.startswith('# A page\n\nBefore.\n\n' + TABLE_BEGIN + '\n|')
    assert page.endswith(table[-1] + '\n' + TABLE_END + '\n\nAfter.\n')
    assert all(row in page.splitlines() for row in table)
    assert '| stale |' not in page
    res = script('reproduction.py', *args, cwd=tmp_path)  # nothing moves
    assert res.returncode == 0 and readme.read_text() == page
    # A page without the two lines: one line naming them, nothing written.
    other = tmp_path / 'other.md'
    other.write_text('# no place\n')
    res = script('reproduction.py', 'report', '--runs', runs, '--out',
                 tmp_path / 'b/r.md', '--readme', other, cwd=tmp_path)
    line = one_line_error(res, 'reproduction.py')
    assert str(other) in line and TABLE_BEGIN in line
    assert not (tmp_path / 'b').exists()
    assert other.read_text() == '# no place\n'


# --------------------------------------------------------------------------
# Rows that disagree, non-finite scores


def write_runs(path, rows):
    import csv
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=RUNS_COLUMNS, lineterminator='\n')
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def committed(tmp_path):
    folder = tmp_path / 'results'
    for seed, (e, h) in enumerate(zip(ERM, HMA)):
        write_json(folder / f'erm/seed{seed}.json', record('erm', seed, e))
        write_json(folder / f'hma/seed{seed}.json', record('hma', seed, h))
    runs = tmp_path / 'paper/runs.csv'
    collect([folder], runs)
    return runs


@pytest.mark.parametrize('change, named', [
    # The same key (fingerprint, seed, variant, selected_by), other values.
    (lambda rows: rows.append(dict(rows[0], test='0.99')), ':2 and '),
    # Another run of the same configuration and seed with another score:
    # it would be averaged in (or "last row wins").
    (lambda rows: rows.append(dict(rows[0], fingerprint='other',
                                   test='0.99')), ':2 and '),
    (lambda rows: rows[3].update(test='nan'), ':5 ('),
    (lambda rows: rows[3].update(val='inf'), ':5 ('),
])
def test_report_stops_on_rows_that_disagree(committed, tmp_path, change,
                                            named):
    rows = read_runs(committed)
    change(rows)
    write_runs(committed, rows)
    before = committed.read_bytes()
    out, figures = tmp_path / 'docs/r.md', tmp_path / 'docs/fig'
    res = script('reproduction.py', 'report', '--runs', committed, '--out',
                 out, '--figures', figures, cwd=tmp_path)
    line = one_line_error(res, 'reproduction.py')
    assert named in line and str(committed) in line
    assert not out.exists() and not figures.exists()
    assert committed.read_bytes() == before
    with pytest.raises(IntegrityError):
        report_markdown(rows, None)


def test_collect_stops_on_non_finite_and_conflicting_runs(committed,
                                                          tmp_path):
    before = committed.read_bytes()
    new = tmp_path / 'new'
    write_json(new / 'hma/seed7.json', record('hma', 7, math.nan,
                                              run_fingerprint='n7'))
    with pytest.raises(IntegrityError, match=r'non-finite.*seed7\.json'):
        collect([new], committed)
    assert committed.read_bytes() == before
    # One run (fingerprint) in two folders with other scores: neither is
    # taken by the order of the arguments.
    a, b = tmp_path / 'a', tmp_path / 'b'
    write_json(a / 'erm/seed9.json', record('erm', 9, 0.1,
                                            run_fingerprint='x9'))
    write_json(b / 'erm/seed9.json', record('erm', 9, 0.3,
                                            run_fingerprint='x9'))
    for order in ([a, b], [b, a]):
        with pytest.raises(IntegrityError, match='same fingerprint'):
            collect(order, committed)
    # Two runs of one configuration and seed, other fingerprints.
    write_json(b / 'erm/seed9.json', record('erm', 9, 0.3,
                                            run_fingerprint='y9'))
    with pytest.raises(IntegrityError, match='same key'):
        collect([a, b], committed)
    assert committed.read_bytes() == before


def test_collect_names_every_file_it_skips(committed, tmp_path):
    folder = tmp_path / 'more'
    (folder / 'erm').mkdir(parents=True)
    (folder / 'erm/seed5.json').write_text('{"kind": "pyg_hma.result", "da')
    (folder / 'erm/seed6.json').write_text('[' * 200000 + ']' * 200000)
    write_json(folder / 'erm/seed7.json', record('erm', 7, 0.2, quick=True,
                                                 run_fingerprint='q7'))
    (folder / 'notes.json').write_text('{"kind": "something else"}')
    write_json(folder / 'erm/seed8.json', record('erm', 8, 0.2,
                                                 run_fingerprint='e8'))
    res = script('reproduction.py', 'collect', folder, '--runs', committed,
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f'{committed}: 1 rows added' in res.stdout
    why = dict(line.split(': ', 1) for line in res.stderr.splitlines())
    assert 'truncated' in why[f'skipped {folder}/erm/seed5.json']
    assert 'nested too deeply' in why[f'skipped {folder}/erm/seed6.json']
    assert 'quick' in why[f'skipped {folder}/erm/seed7.json']
    assert 'not a result' in why[f'skipped {folder}/notes.json']


def result_files(folder, tests, **changes):
    for seed, test in enumerate(tests):
        write_json(folder / f'erm/seed{seed}.json',
                   record('erm', seed, test, **changes))


@pytest.mark.parametrize('case', ['nan', 'same-run', 'same-seed',
                                  'two-engines'])
def test_benchmarks_report_stops_on_results_that_disagree(tmp_path, case):
    a, b = tmp_path / 'a', tmp_path / 'b'
    result_files(a, [0.1, 0.2, 0.3])
    if case == 'nan':
        write_json(b / 'erm/seed4.json', record('erm', 4, math.nan,
                                                run_fingerprint='n4'))
    elif case == 'same-run':  # a copy of a run with other scores
        result_files(b, [0.9])
    elif case == 'two-engines':  # the run again, by a newer engine
        result_files(b, [0.9], engine=4)
    else:  # another run of the same configuration and seed
        result_files(b, [0.9], run_fingerprint='other')
    for order in ((a, b), (b, a)):
        res = script('report.py', *order, '--out', tmp_path / 'r.md',
                     cwd=tmp_path)
        line = one_line_error(res, 'report.py')
        assert str(a / 'erm/seed0.json') in line or case == 'nan'
        assert str(b / 'erm') in line
        assert res.stdout == '' and not (tmp_path / 'r.md').exists()


# --------------------------------------------------------------------------
# Which code produced a cell's rows, and the command that reproduces them


def planned_fingerprint(method, seed, alone=False):
    # What the current code plans for the run; alone: the identity the run
    # had when trained one seed at a time by older code.
    from pyg_hma.study.provenance import _planned
    from pyg_hma.runners.protocols import ood
    got = _planned('ood', ood.PROTOCOLS, ['--dataset', 'NCI1', '--method',
                                          method, '--seeds', f'{seed}-{seed}'])
    return got[method, seed][1 if alone else 0]


def test_each_cell_names_its_code_and_a_checked_command(tmp_path):
    from pyg_hma.study.provenance import STATUS_NOTES, AT_COMMIT
    folder = tmp_path / 'r'
    for seed, (e, h) in enumerate(zip(ERM, HMA)):
        # ERM: the fingerprints the current code plans.
        write_json(folder / f'erm/seed{seed}.json', record(
            'erm', seed, e, commit='a' * 40 if seed < 3 else 'b' * 40,
            run_fingerprint=planned_fingerprint('erm', seed)))
        # IRM: trained one seed at a time by older code.
        write_json(folder / f'irm/seed{seed}.json', record(
            'irm', seed, e, commit='d' * 40,
            run_fingerprint=planned_fingerprint('irm', seed, alone=True)))
        write_json(folder / f'hma/seed{seed}.json', record(
            'hma', seed, h, modes(h, h - 0.1), commit='c' * 40))
    runs = tmp_path / 'runs.csv'
    collect([folder], runs)
    text = report_markdown(read_runs(runs), None)
    lines = text.splitlines()
    erm = next(x for x in lines if x.startswith('- NCI1 GCN: ERM'))
    assert "code `aaaaaaa`, `bbbbbbb`" in erm
    assert erm.endswith('`python benchmarks/ood.py --dataset NCI1 --method '
                        'erm --seeds 0-4`')
    irm = next(x for x in lines if x.startswith('- NCI1 GCN: IRM'))
    assert irm.endswith('`python benchmarks/ood.py --dataset NCI1 --method '
                        'irm --seeds 0-4 --seed-batch 1`'
                        + STATUS_NOTES[AT_COMMIT])
    assert 'code `ddddddd`' in irm
    hma = next(x for x in lines if x.startswith('- NCI1 GCN: HMA'))
    assert 'code `ccccccc`' in hma and '--compare-evals' in hma
    assert hma.endswith('(unchecked: the current code plans other '
                        'fingerprints)')  # fingerprints made up here


def test_the_committed_report_regenerates_from_the_committed_rows(tmp_path):
    # `python benchmarks/reproduction.py report` (its defaults: the rows of
    # results/paper, docs/reproduction.md, figures in docs/figures) gives
    # the committed report, byte for byte.
    from pyg_hma.study.report import report
    from pyg_hma.train.results import load_paper
    paper = load_paper() or load_paper(
        ROOT.parent / 'shared/paper/graph_results.csv')
    if paper is None:
        pytest.skip("the paper's numbers (graph_results.csv) are not here")
    out = tmp_path / 'docs/reproduction.md'
    text = report(ROOT / 'results/paper/runs.csv', paper, out=out,
                  figures_dir=tmp_path / 'docs/figures')
    assert text == (ROOT / 'docs/reproduction.md').read_text(), (
        'docs/reproduction.md is not the report of the committed rows: '
        'run `python benchmarks/reproduction.py report` and commit it')
    # The README quotes the report's HMA-against-ERM table, as it is.
    page = (ROOT / 'README.md').read_text()
    assert with_hma_table(page, text) == page, (
        "README.md's HMA-against-ERM table is not the report's: run "
        '`python benchmarks/reproduction.py report` and commit it')


def test_every_committed_row_names_the_engine_of_its_commit():
    # A row collected with another engine version than its commit's would
    # be averaged with the wrong cell.
    from pyg_hma.train.results import ENGINE_VERSIONS, engine_of_commit
    rows = read_runs(ROOT / 'results/paper/runs.csv')
    known = engine_of_commit(ENGINE_VERSIONS[-1][1], str(ROOT))
    if known is None:
        pytest.skip('needs the git history of this checkout')
    wrong = sorted({(r['commit'][:7], r['engine'],
                     engine_of_commit(r['commit'], str(ROOT)))
                    for r in rows
                    if engine_of_commit(r['commit'], str(ROOT))
                    != int(r['engine'])})
    assert not wrong, f'(commit, row engine, its engine): {wrong}'
    assert {int(r['engine']) for r in rows} <= {
        v for v, _, _ in ENGINE_VERSIONS}


def test_the_committed_report_names_a_checked_command_for_every_cell():
    text = (ROOT / 'docs/reproduction.md').read_text()
    commands = [x for x in text.splitlines() if x.startswith('- ')
                and '`python benchmarks/' in x]
    assert len(commands) > 20 and not any('unchecked' in x for x in commands)


# --------------------------------------------------------------------------
# Bad inputs: one line, exit status 2, nothing left behind


def test_deep_json_stops_benchmarks_report_with_one_line(tmp_path):
    folder = tmp_path / 'r'
    result_files(folder, [0.1, 0.2])
    (folder / 'erm/seed5.json').write_text('[' * 200000 + ']' * 200000)
    res = script('report.py', folder, cwd=tmp_path)
    line = one_line_error(res, 'report.py')
    assert 'seed5.json' in line and 'nested too deeply' in line
    assert res.stdout == ''
    # Asked to, it reports without the file, naming it.
    res = script('report.py', folder, '--skip-unreadable', cwd=tmp_path)
    assert res.returncode == 0 and 'seed5.json' in res.stderr
    assert '0.150 ± 0.071 (2)' in res.stdout


@pytest.mark.parametrize('where', ['file/report.md', 'folder'])
def test_unwritable_out_stops_benchmarks_report_before_printing(tmp_path,
                                                                where):
    folder = tmp_path / 'r'
    result_files(folder, [0.1, 0.2])
    (tmp_path / 'file').write_text('a file, not a folder')
    (tmp_path / 'folder').mkdir()
    listing = sorted(tmp_path.rglob('*'))
    res = script('report.py', folder, '--out', tmp_path / where,
                 cwd=tmp_path)
    line = one_line_error(res, 'report.py')
    assert f'--out {tmp_path / where}' in line
    assert res.stdout == '' and sorted(tmp_path.rglob('*')) == listing


@pytest.mark.parametrize('damage', ['random', 'truncated'])
def test_damaged_study_db_is_one_line(tmp_path, monkeypatch, capsys, damage):
    pytest.importorskip('optuna')
    from test_sweep import FAKE_ARGV, FakeRunner
    from pyg_hma.study import sweep as sw
    out = tmp_path / 'sweep'
    monkeypatch.setattr(sw, 'run_runner', FakeRunner())
    assert sw.main(FAKE_ARGV + ['--out', str(out), '--n-trials', '1']) == 0
    db = out / 'study.db'
    data = db.read_bytes()
    if damage == 'random':
        import random
        db.write_bytes(random.Random(0).randbytes(len(data)))
    else:
        db.write_bytes(data[:len(data) // 3])
    capsys.readouterr()
    listing = {p: p.stat().st_mtime_ns for p in out.rglob('*')}
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    assert sw.main(FAKE_ARGV + ['--out', str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('sweep.py: error:')
    assert str(db) in err[0] and 'Traceback' not in err[0]
    assert fake.calls == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*')} == listing


# --------------------------------------------------------------------------
# make bench: the study's cell beside a new run's summary


def test_summary_shows_the_committed_study_cell(tmp_path, monkeypatch):
    config = {'train': {'lr': 0.001}, 'loader': 'device'}
    study = [record('erm', s, e, config=config, run_fingerprint=f's{s}')
             for s, e in enumerate(ERM)]
    runs = tmp_path / 'runs.csv'
    write_runs(runs, [row for rec in study for row in rows_of_result(rec)])
    monkeypatch.setenv('PYG_HMA_RUNS', str(runs))
    # A new run of the same configuration, seed-batched (the default).
    new = [record('erm', s, 0.2, config=dict(config, seed_batched=True),
                  run_fingerprint=f'n{s}') for s in range(2)]
    md = write_summary(tmp_path / 'out', new, None)
    assert '| method | seeds | val | test | study (n) |' in md
    row = next(x for x in md.splitlines() if x.startswith('| ERM'))
    assert '| 0.150 ± 0.016 (5) |' in row
    assert 'trained one seed at a time by earlier code' in md
    # Other settings: no study cell to compare with.
    other = [record('erm', 0, 0.2, config=dict(config, train={'lr': 0.1}),
                    run_fingerprint='o0')]
    assert 'study' not in write_summary(tmp_path / 'o', other, None)


def test_methods_are_paired_with_the_erm_rows_of_the_same_code():
    # Rows of two engine versions never pair across: shared commits first,
    # else the ERM cell nearest in the history, else every ERM cell.
    from pyg_hma.study.cells import same_code
    order = {'old': 0, 'mid': 1, 'new': 2, 'newer': 3}
    erm = {'e_old': {'old'}, 'e_new': {'new+dirty'}}
    assert same_code({'old'}, erm, order) == ['e_old']
    assert same_code({'newer'}, erm, order) == ['e_new']
    assert same_code({'unknown'}, erm, order) == ['e_new', 'e_old']
    assert same_code({'newer'}, erm, None) == ['e_new', 'e_old']


# --------------------------------------------------------------------------
# Engine versions


def test_a_newer_engine_run_of_a_committed_seed_is_its_own_cell(tmp_path):
    # The same configuration and seeds trained again by a newer engine
    # (same fingerprints, other scores): collected beside the committed
    # rows, never replacing them, and reported as its own cell (never
    # averaged with the older one); the same engine with other scores
    # still stops collect.
    old, new = tmp_path / 'old', tmp_path / 'new'
    for seed, (e, h) in enumerate(zip(ERM, HMA)):
        write_json(old / f'erm/seed{seed}.json', record('erm', seed, e,
                                                        engine=2))
        write_json(old / f'hma/seed{seed}.json', record('hma', seed, h,
                                                        engine=2))
        write_json(new / f'erm/seed{seed}.json',
                   record('erm', seed, e + 0.05, engine=3))
        write_json(new / f'hma/seed{seed}.json',
                   record('hma', seed, h - 0.05, engine=3))
    runs = tmp_path / 'paper/runs.csv'
    collect([old], runs)
    before = read_runs(runs)
    assert collect([new], runs) == (len(before), 0)
    after = read_runs(runs)
    assert [r for r in after if r['engine'] == '2'] == before
    text = report_markdown(after, None)
    assert '| NCI1 | GCN | ERM (config ' in text
    erm = table_rows(text, '| NCI1 | GCN | ERM (')
    assert [row.split(' | ')[2].endswith(f', engine {e})')
            for row, e in zip(erm, (2, 3))] == [True, True]
    assert [row.split(' | ')[3] for row in erm] == [
        '0.150 ± 0.016 (5)', '0.200 ± 0.016 (5)']
    # Each engine's HMA is paired with its own engine's ERM: 5 pairs each.
    paired = table_rows(text, '| NCI1 | GCN | HMA (config ')
    assert sorted(row.split(' | ')[3].split(' [')[0] for row in paired
                  if ' − ERM' in row) == ['+0.050', '-0.050']
    clash = tmp_path / 'clash'
    write_json(clash / 'erm/seed0.json', record('erm', 0, 0.5, engine=3))
    with pytest.raises(IntegrityError, match='other values'):
        collect([clash], runs)
    assert read_runs(runs) == after


def test_the_engine_of_a_result_without_one_comes_from_its_commit(
        tmp_path):
    # Results from before the field was recorded: the commit's place in
    # the history decides; an unknown commit stops collect in one line.
    from pyg_hma.study.rows import engine_of_result
    from pyg_hma.train.results import (ENGINE_VERSION, ENGINE_VERSIONS,
                                       engine_of_commit)
    history = subprocess.run(['git', '-C', str(ROOT), 'rev-list', 'HEAD'],
                             capture_output=True, text=True)
    commits = history.stdout.split()
    if history.returncode or ENGINE_VERSIONS[1][1] not in commits:
        pytest.skip('needs the git history of this checkout')
    for version, first, _ in ENGINE_VERSIONS[1:]:
        assert engine_of_commit(first, str(ROOT)) == version
        parent = subprocess.run(['git', '-C', str(ROOT), 'rev-parse',
                                 first + '^'], capture_output=True,
                                text=True).stdout.strip()
        assert engine_of_commit(parent + '+dirty', str(ROOT)) == version - 1
    assert engine_of_commit(commits[0], str(ROOT)) == ENGINE_VERSION
    rec = record('erm', 0, 0.1, commit=ENGINE_VERSIONS[1][1])
    del rec['engine']
    assert engine_of_result(rec, ROOT) == 2
    assert engine_of_result(dict(rec, engine=3), ROOT) == 3  # recorded
    folder = tmp_path / 'unknown'
    write_json(folder / 'erm/seed0.json', dict(rec, commit='f' * 40))
    res = script('reproduction.py', 'collect', folder, '--runs',
                 tmp_path / 'runs.csv', cwd=tmp_path)
    line = one_line_error(res, 'reproduction.py')
    assert 'records no engine version' in line and 'seed0.json' in line
    assert not (tmp_path / 'runs.csv').exists()


def test_the_summary_shows_the_newest_engine_of_a_study_cell(
        tmp_path, monkeypatch):
    config = {'train': {'lr': 0.001}, 'loader': 'device'}
    study = [record('erm', s, e + shift, config=config, engine=engine,
                    run_fingerprint=f's{s}')
             for engine, shift in ((3, 0.05), (2, 0.0))
             for s, e in enumerate(ERM)]
    runs = tmp_path / 'runs.csv'
    write_runs(runs, [row for rec in study for row in rows_of_result(rec)])
    monkeypatch.setenv('PYG_HMA_RUNS', str(runs))
    new = [record('erm', 0, 0.2, config=config, run_fingerprint='n0')]
    md = write_summary(tmp_path / 'out', new, None)
    row = next(x for x in md.splitlines() if x.startswith('| ERM'))
    assert '| 0.200 ± 0.016 (5) |' in row  # engine 3 only, not a mix
    assert 'engine 3: same configuration' in md


def test_one_collect_takes_two_engines_runs_of_one_seed(tmp_path):
    # The old and the new engine's result folders in one call: two runs,
    # not one run with two sets of scores.
    for engine, shift in ((2, 0.0), (3, 0.05)):
        write_json(tmp_path / f'e{engine}/erm/seed0.json',
                   record('erm', 0, 0.1 + shift, engine=engine))
    runs = tmp_path / 'runs.csv'
    assert collect([tmp_path / 'e3', tmp_path / 'e2'], runs) == (2, 0)
    assert sorted((r['engine'], r['test']) for r in read_runs(runs)) == [
        ('2', '0.1'), ('3', '0.15000000000000002')]

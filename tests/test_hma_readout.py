import copy

import pytest
import torch
import torch.nn.functional as F

from pyg_hma import HMAClassifier, HMAReadout, MomentumEncoder

D, C = 24, 3


def make(**kwargs):
    kwargs.setdefault('memory_size', 10)
    kwargs.setdefault('slots_per_class', 4)
    kwargs.setdefault('label_dim', 8)
    kwargs.setdefault('dropout', 0.0)
    torch.manual_seed(0)
    return HMAReadout(D, C, **kwargs)


def fill_queue(readout, n=None, seed=1):
    """Puts real rows into the queue (training-mode write, then eval)."""
    g = torch.Generator().manual_seed(seed)
    n = readout.memory_size if n is None else n
    readout.write(torch.randn(n, D, generator=g),
                  torch.randint(0, C, (n, ), generator=g))


@pytest.mark.parametrize('out_channels,expected', [(None, C), (1, 1)])
def test_output_shapes(out_channels, expected):
    readout = make(out_channels=out_channels)
    x = torch.randn(7, D)
    assert readout(x).shape == (7, expected)
    assert readout(x, y=torch.randint(0, C, (7, ))).shape == (7, expected)
    readout.eval()
    assert readout(x).shape == (7, expected)
    assert readout(x[:1]).shape == (1, expected)


def test_repr():
    # The constructor's arguments, in its order: (in_channels, num_classes).
    assert repr(make()) == (
        'HMAReadout(24, 3, memory_size=10, slots_per_class=4, label_dim=8, '
        "heads=4, dropout=0.0, rma=True, abd=True, synthetic=True, "
        "inference='batch', head='both')")
    assert repr(make(out_channels=1, head='label', check_inputs=False)) == (
        'HMAReadout(24, 3, out_channels=1, memory_size=10, slots_per_class=4, '
        "label_dim=8, heads=4, dropout=0.0, rma=True, abd=True, "
        "synthetic=True, inference='batch', head='label', check_inputs=False)")


def test_gradients_reach_slots_labels_and_attention():
    readout = make()
    fill_queue(readout)
    x = torch.randn(6, D, requires_grad=True)
    out = readout(x, y=torch.randint(0, C, (6, )))
    F.cross_entropy(out, torch.randint(0, C, (6, ))).backward()
    named = dict(readout.named_parameters())
    for name in ['slots', 'label_emb.weight', 'rma_block.q_proj.weight',
                 'rma_block.kv_proj.weight', 'sma_block.q_proj.weight',
                 'sma_block.kv_proj.weight', 'lin.weight']:
        grad = named[name].grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    # Every class's label embedding is used (queue rows, slots), and the
    # "unknown" row by every input.
    assert (named['label_emb.weight'].grad.abs().sum(dim=1) > 0).all()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_slots_start_distinct_and_stay_distinct():
    readout = make()
    slots = readout.slots.detach()
    for c in range(C):  # pairwise distinct within each class
        dist = torch.cdist(slots[c], slots[c])
        assert (dist + torch.eye(4)).min() > 1e-3
    before = slots.clone()
    opt = torch.optim.Adam(readout.parameters(), lr=1e-2)
    for _ in range(5):
        x, y = torch.randn(8, D), torch.randint(0, C, (8, ))
        loss = F.cross_entropy(readout(x, y=y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = readout.slots.detach()
    assert not torch.allclose(before, after)  # they learn
    # ... and each slot moved differently from its siblings.
    delta = after - before
    assert not torch.allclose(delta[:, 0], delta[:, 1])


def test_eval_never_changes_buffers():
    readout = make()
    fill_queue(readout, n=4)
    readout.eval()
    before = {k: v.clone() for k, v in readout.state_dict().items()}
    x, y = torch.randn(5, D), torch.randint(0, C, (5, ))
    readout(x, y=y, key=torch.randn(5, D))
    readout(x)
    for k, v in readout.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_training_without_labels_does_not_write():
    readout = make()
    readout(torch.randn(5, D))
    assert int(readout.queue_ptr) == 0
    assert (readout.queue_labels == -1).all()


def test_write_positions_with_wraparound():
    readout = make(memory_size=10)
    rows = []
    for step, batch_size in enumerate([4, 4, 4, 3]):  # 4 does not divide 10
        x = torch.randn(batch_size, D)
        key = torch.randn(batch_size, D)
        y = torch.randint(0, C, (batch_size, ))
        readout(x, y=y, key=key)
        rows.append((key, y))
    keys = torch.cat([k for k, _ in rows])  # 15 rows written in order
    labels = torch.cat([y for _, y in rows])
    # Rows 0..14 go to positions 0..9, 0..4: the newest 10 rows remain.
    expected_pos = torch.arange(15) % 10
    for pos in range(10):
        last = (expected_pos == pos).nonzero().max()
        assert torch.equal(readout.queue_keys[pos], keys[last])
        assert readout.queue_labels[pos] == labels[last]
    assert int(readout.queue_ptr) == 15 % 10


def test_write_batch_larger_than_queue():
    readout = make(memory_size=10)
    readout.write(torch.randn(3, D), torch.zeros(3, dtype=torch.long))
    keys = torch.randn(23, D)
    labels = torch.randint(0, C, (23, ))
    readout.write(keys, labels)
    # Stream positions 3..25; the newest 10 rows are stream rows 16..25,
    # i.e. keys[13:23], at positions (16..25) % 10.
    for i in range(13, 23):
        pos = (3 + i) % 10
        assert torch.equal(readout.queue_keys[pos], keys[i])
        assert readout.queue_labels[pos] == labels[i]
    assert int(readout.queue_ptr) == (3 + 23) % 10
    assert (readout.queue_labels >= 0).all()


def test_momentum_update_is_ema():
    online = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5))
    enc = MomentumEncoder(online, momentum=0.9)
    old = [p.detach().clone() for p in enc.module.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 4))  # changes BatchNorm running stats
    enc.update(online)
    for o, k, q in zip(old, enc.module.parameters(), online.parameters()):
        assert torch.allclose(k, 0.9 * o + 0.1 * q)
        assert not k.requires_grad
    for kb, qb in zip(enc.module.buffers(), online.buffers()):
        assert torch.equal(kb, qb)


def test_permutation_equivariance():
    readout = make()
    fill_queue(readout)
    readout.eval()
    x = torch.randn(9, D)
    perm = torch.randperm(9)
    assert torch.allclose(readout(x)[perm], readout(x[perm]), atol=1e-5)


def test_independent_inference_ignores_batch_companions():
    readout = make(inference='independent')
    fill_queue(readout)
    readout.eval()
    x = torch.randn(20, D)
    full = readout(x)
    singles = torch.cat([readout(x[i:i + 1]) for i in range(20)])
    sevens = torch.cat([readout(x[i:i + 7]) for i in range(0, 20, 7)])
    perm = torch.randperm(20)
    assert torch.allclose(full, singles, atol=1e-5)
    assert torch.allclose(full, sevens, atol=1e-5)
    assert torch.allclose(full[perm], readout(x[perm]), atol=1e-5)

    # The paper's "batch" mode does depend on the companions.
    readout.inference = 'batch'
    batch_full = readout(x)
    batch_singles = torch.cat([readout(x[i:i + 1]) for i in range(20)])
    assert not torch.allclose(batch_full, batch_singles, atol=1e-3)


def test_rma_switch_removes_queue_effect():
    x = torch.randn(6, D)
    for rma in (True, False):
        readout = make(rma=rma)
        readout.eval()
        empty = readout(x)
        if rma:
            fill_queue(readout)
            assert not torch.allclose(empty, readout(x), atol=1e-4)
        else:
            assert readout.rma_block is None
            assert readout.queue_keys.numel() == 0
            readout.train()
            readout(x, y=torch.zeros(6, dtype=torch.long))  # no write
            readout.eval()
            assert torch.equal(empty, readout(x))


def test_abd_switch_removes_batch_attention():
    x = torch.randn(6, D)
    for abd in (True, False):
        readout = make(abd=abd, rma=False)  # training mode
        full = readout(x)
        single = torch.cat([readout(x[i:i + 1]) for i in range(6)])
        assert torch.allclose(full, single, atol=1e-5) == (not abd)


def test_synthetic_switch_removes_slots():
    x = torch.randn(6, D)
    with_slots = make(synthetic=True, abd=False, rma=False)
    with_slots.eval()
    out = with_slots(x)
    with torch.no_grad():
        with_slots.slots.add_(1.0)
    assert not torch.allclose(out, with_slots(x), atol=1e-4)

    no_slots = make(synthetic=False, abd=True, rma=False)
    assert no_slots.slots is None
    assert not any('slots' in n for n, _ in no_slots.named_parameters())
    # No slots and no ABD: the SMA block is gone altogether.
    assert make(synthetic=False, abd=False).sma_block is None


def test_state_dict_round_trip_restores_outputs():
    readout = make()
    for _ in range(3):
        readout(torch.randn(4, D), y=torch.randint(0, C, (4, )))
    readout.eval()
    x = torch.randn(5, D)
    out = readout(x)
    state = copy.deepcopy(readout.state_dict())
    assert {'queue_keys', 'queue_labels', 'queue_ptr'} <= set(state)

    torch.manual_seed(123)
    fresh = HMAReadout(D, C, memory_size=10, slots_per_class=4, label_dim=8,
                       dropout=0.0)
    fresh.eval()
    assert not torch.allclose(fresh(x), out)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), out)
    assert int(fresh.queue_ptr) == int(readout.queue_ptr)


def test_reset_memory_and_parameters():
    readout = make()
    fill_queue(readout)
    slots = readout.slots.detach().clone()
    readout.reset_memory()
    assert (readout.queue_labels == -1).all() and int(readout.queue_ptr) == 0
    assert torch.equal(readout.slots, slots)
    fill_queue(readout)
    readout.reset_parameters()
    assert not torch.equal(readout.slots, slots)
    assert (readout.queue_labels == -1).all()


def test_labels_never_enter_the_prediction():
    readout = make()
    fill_queue(readout)
    x = torch.randn(6, D)
    state = copy.deepcopy(readout.state_dict())
    with_labels = readout(x, y=torch.randint(0, C, (6, )))
    readout.load_state_dict(state)
    other_labels = readout(x, y=torch.randint(0, C, (6, )))
    readout.load_state_dict(state)
    without = readout(x)
    assert torch.equal(with_labels, without)
    assert torch.equal(other_labels, without)


def test_classifier_writes_momentum_keys():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, D), torch.nn.ReLU())
    model = HMAClassifier(encoder, make(), momentum=0.5)
    inputs = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        encoder[0].weight.add_(1.0)  # online and momentum copy now differ
    expected_params = [0.5 * k + 0.5 * q for k, q in zip(
        model.momentum_encoder.module.parameters(), encoder.parameters())]
    model(inputs, y=y)
    for p, e in zip(model.momentum_encoder.module.parameters(),
                    expected_params):
        assert torch.allclose(p, e)
    keys = model.momentum_encoder(inputs)
    assert torch.allclose(model.readout.queue_keys[:4], keys)
    assert not torch.allclose(keys, encoder(inputs))
    assert torch.equal(model.readout.queue_labels[:4], y)

    # Optimisers see only the online parameters as trainable.
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(id(p) not in trainable
               for p in model.momentum_encoder.parameters())
    # Without real memory there is no momentum copy to maintain.
    assert HMAClassifier(encoder, make(rma=False)).momentum_encoder is None


def test_classifier_without_momentum_writes_online_embeddings():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, D), torch.nn.ReLU())
    model = HMAClassifier(encoder, make(), momentum=None)
    assert model.momentum_encoder is None
    assert 'momentum_encoder' not in ''.join(model.state_dict())
    inputs = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 1])
    model(inputs, y=y)
    queue = model.readout.queue_keys
    assert torch.allclose(queue[:4], encoder(inputs))
    assert not queue[:4].requires_grad
    assert torch.equal(model.readout.queue_labels[:4], y)
    model.eval()
    model(inputs, y=y)  # eval: no write
    assert (model.readout.queue_labels[4:] == -1).all()


def test_compiled_eval_forward_matches_eager():
    readout = make(inference='independent')
    fill_queue(readout)
    readout.eval()
    x = torch.randn(8, D)
    compiled = torch.compile(readout)
    assert torch.allclose(compiled(x), readout(x), atol=1e-5)


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(x=torch.randn(4, D + 1)), ValueError, r'shape \[B, 24\]'),
    (dict(x=torch.randn(4)), ValueError, 'shape'),
    (dict(x=torch.randn(0, D)), ValueError, 'empty batch'),
    (dict(x=torch.randint(0, 3, (4, D))), TypeError, 'floating point'),
    (dict(y=torch.tensor([0, 1, 3, 0])), ValueError, r'\[0, 2\].*\[0, 3\]'),
    (dict(y=torch.tensor([0, -1, 1, 0])), ValueError, r'\[0, 2\]'),
    (dict(y=torch.tensor([0., 1., 1., 0.])), TypeError, 'integer'),
    (dict(y=torch.tensor([0, 1, 1])), ValueError, 'labels of shape'),
    (dict(x=torch.full((4, D), float('nan'))), ValueError, 'NaN'),
    (dict(key=torch.full((4, D), float('inf'))), ValueError, 'NaN or Inf'),
    (dict(key=torch.randn(3, D)), ValueError, 'keys of shape'),
])
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    readout = make()
    args = dict(x=torch.randn(4, D), y=torch.tensor([0, 1, 2, 0]))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        readout(**args)
    assert int(readout.queue_ptr) == 0  # nothing half-written


@pytest.mark.parametrize('kwargs,match', [
    (dict(heads=5), 'divisible'),
    (dict(inference='sometimes'), 'inference'),
    (dict(head='middle'), 'head'),
    (dict(memory_size=0), 'memory_size'),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


# --------------------------------------------------------------------------
# Finiteness: the queue never takes a non-finite row, a non-finite sample
# only affects itself under independent inference, corrupt queues are refused
# --------------------------------------------------------------------------
def test_non_finite_training_rows_never_enter_the_queue():
    readout = make(check_inputs=False)  # what the engine uses
    fill_queue(readout, n=4)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, D, generator=g)
    y = torch.randint(0, C, (6, ), generator=g)
    x[2, 3] = float('nan')
    readout(x, y)
    assert torch.isfinite(readout.queue_keys).all()
    # The five finite rows, in order, after the four old ones.
    assert torch.equal(readout.queue_keys[4:9], x[[0, 1, 3, 4, 5]])
    assert torch.equal(readout.queue_labels[4:9], y[[0, 1, 3, 4, 5]])
    assert readout.queue_labels[9] == -1
    assert int(readout.queue_ptr) == 9
    assert int(readout.num_skipped_writes) == 1
    readout.eval()
    assert torch.isfinite(readout(torch.randn(4, D))).all()


def test_write_skips_bad_rows_and_keeps_fifo_order_across_wraparound():
    readout = make(memory_size=10)
    fill_queue(readout, n=8)
    before = readout.queue_keys.clone()
    keys = torch.arange(6 * D, dtype=torch.float).view(6, D)
    keys[1, 0] = float('inf')
    labels = torch.tensor([0, 1, 2, 7, 1, 0])  # 7 is not a class
    readout.write(keys, labels)
    # Rows 0, 2, 4, 5 land in slots 8, 9, 0, 1; the pointer moves by 4.
    assert torch.equal(readout.queue_keys[[8, 9, 0, 1]], keys[[0, 2, 4, 5]])
    assert readout.queue_labels[[8, 9, 0, 1]].tolist() == [0, 2, 1, 0]
    assert torch.equal(readout.queue_keys[2:8], before[2:8])
    assert int(readout.queue_ptr) == 2
    assert int(readout.num_skipped_writes) == 2
    # More valid rows than the queue holds: the newest ten are kept.
    many = torch.arange(13 * D, dtype=torch.float).view(13, D)
    many[12] = float('nan')
    readout.write(many, torch.zeros(13, dtype=torch.long))
    kept = many[2:12]  # 12 valid rows, the newest 10 of them
    # As if all 12 had been written from slot 2 on: row j lands in 2 + j.
    order = (2 + 2 + torch.arange(10)) % 10
    assert torch.equal(readout.queue_keys[order], kept)
    assert int(readout.queue_ptr) == (2 + 12) % 10
    # Nothing valid at all: the queue does not move.
    state = copy.deepcopy(readout.state_dict())
    readout.write(torch.full((3, D), float('nan')), torch.zeros(3).long())
    assert all(torch.equal(state[k], v)
               for k, v in readout.state_dict().items())


def test_check_inputs_refuses_non_finite_training_rows():
    readout = make(check_inputs=True)
    x = torch.randn(4, D)
    x[1, 0] = float('inf')
    with pytest.raises(ValueError, match='NaN or Inf'):
        readout(x, torch.zeros(4, dtype=torch.long))
    assert (readout.queue_labels == -1).all()


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
@pytest.mark.parametrize('rma', [True, False])
def test_non_finite_sample_affects_only_itself_independently(bad, rma):
    readout = make(inference='independent', rma=rma)
    fill_queue(readout)
    readout.eval()
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    others = [0, 1, 3, 4]
    clean = readout(x[others])
    x[2, 5] = bad
    out = readout(x)
    assert not torch.isfinite(out[2]).any()
    assert torch.allclose(out[others], clean, atol=1e-6)


def test_masked_attention_keeps_nan_for_queries_that_attend_to_it():
    from pyg_hma.nn.utils import MaskedAttentionBlock
    torch.manual_seed(0)
    block = MaskedAttentionBlock(8, 2).eval()
    tokens = torch.randn(4, 8)
    tokens[3] = float('nan')
    mask = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 0]]).bool()
    out = block(tokens, 3, mask)
    assert torch.isnan(out[1]).all()  # attends to the NaN token
    assert torch.isfinite(out[[0, 2]]).all()
    assert torch.allclose(out[[0, 2]],
                          block(tokens[:3], 3, mask[:, :3])[[0, 2]])


@pytest.mark.parametrize('key,value,match', [
    ('queue_labels', C, 'queue_labels'),
    ('queue_labels', -2, 'queue_labels'),
    ('queue_keys', float('nan'), 'queue_keys'),
    ('queue_ptr', 10, 'queue_ptr'),
])
def test_load_state_dict_refuses_a_corrupt_queue(key, value, match):
    source = make()
    fill_queue(source, n=6)
    state = copy.deepcopy(source.state_dict())
    target = make()
    target.load_state_dict(state)  # the intact state loads
    assert 'num_skipped_writes' not in state
    if key == 'queue_ptr':
        state[key].fill_(value)
    else:
        state[key][0] = value
    with pytest.raises(ValueError, match=match):
        make().load_state_dict(state)
    # Through a module that holds the readout, the key is named in full.
    holder = torch.nn.ModuleDict({'readout': make()})
    with pytest.raises(ValueError, match=f'readout.{match}'):
        holder.load_state_dict({f'readout.{k}': v for k, v in state.items()})


def _old_guard_block(block, tokens, num_queries, mask):
    # MaskedAttentionBlock.forward with the guard it had before: whole bad
    # rows (`~isfinite(kv).all(1)`) replaced by zeros with torch.where.
    import math
    h = block.norm1(tokens)
    q = block.q_proj(h[:num_queries]).view(1, num_queries, block.heads, -1)
    kv = block.kv_proj(h)
    bad = ~torch.isfinite(kv).all(dim=1)
    kv = torch.where(bad[:, None], kv.new_zeros(()), kv)
    poisoned = (mask & bad[None, :]).any(dim=1)
    k, v = kv.view(1, h.size(0), 2, block.heads, -1).unbind(dim=2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=mask.view(1, 1, *mask.shape))
    out = out.transpose(1, 2).reshape(num_queries, block.channels)
    out = torch.where(poisoned[:, None], out.new_full((), math.nan), out)
    z = tokens[:num_queries] + block.out_proj(out)
    return z + block.ffn(block.norm2(z))


@pytest.mark.parametrize('bad', [None, float('nan'), float('inf'),
                                 -float('inf')])
def test_masked_attention_guard_matches_the_isfinite_where_guard(bad):
    from pyg_hma.nn.utils import MaskedAttentionBlock
    torch.manual_seed(0)
    block = MaskedAttentionBlock(8, 2).eval()
    tokens = torch.randn(6, 8)
    if bad is not None:
        tokens[4, 1] = bad  # one entry of a memory token
    mask = torch.tensor([[1, 0, 0, 1, 0, 1], [0, 1, 0, 1, 1, 1],
                         [0, 0, 1, 0, 0, 1]]).bool()
    grads = []
    for fn in (lambda t: block(t, 3, mask),
               lambda t: _old_guard_block(block, t, 3, mask)):
        t = tokens.clone().requires_grad_()
        out = fn(t)
        # Only finite outputs enter the loss (the NaN query is row 1).
        out[torch.isfinite(out).all(dim=1)].sum().backward()
        grads.append((out.detach(), t.grad))
    (out, grad), (ref_out, ref_grad) = grads
    assert torch.equal(out.isnan(), ref_out.isnan())
    assert torch.allclose(out.nan_to_num(), ref_out.nan_to_num(), atol=1e-6)
    assert torch.equal(grad.isnan(), ref_grad.isnan())
    assert torch.allclose(grad.nan_to_num(), ref_grad.nan_to_num(),
                          atol=1e-6)
    if bad is not None:
        assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2]]).all()


def test_momentum_update_equals_the_per_tensor_loop():
    from pyg_hma.models import build_backbone
    torch.manual_seed(0)
    online = build_backbone('gcn-v', num_features=5, hidden_channels=8,
                            num_layers=2)
    enc = MomentumEncoder(online, momentum=0.9)
    ref = copy.deepcopy(enc.module)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        for b in online.buffers():
            b.add_(1)
    enc.update(online)
    with torch.no_grad():
        for k, q in zip(ref.parameters(), online.parameters()):
            k.lerp_(q, 0.1)
        for k, q in zip(ref.buffers(), online.buffers()):
            k.copy_(q)
    for (name, a), b in zip(enc.module.state_dict().items(),
                            ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_parameters_and_buffers_walk_equals_torch_lists():
    from pyg_hma.models import build_backbone
    from pyg_hma.nn.momentum import _parameters_and_buffers
    model = HMAClassifier(build_backbone('gin-v', num_features=5,
                                         hidden_channels=8, num_layers=2),
                          HMAReadout(8, C, memory_size=4))
    model.shared = model.encoder.convs[0]  # a module reached twice
    params, buffers = _parameters_and_buffers(model)
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    assert [id(b) for b in buffers] == [id(b) for b in model.buffers()]


def test_one_queue_write_for_the_module_and_for_stacked_seeds():
    # HMAReadout.write and the seed-batched trainer execute one definition
    # (pyg_hma.nn.queue.write_queue): S queues written at once equal S
    # modules written one by one, skipped rows counted in both.
    from pyg_hma.nn.hma_functional import write_queues
    gen = torch.Generator().manual_seed(0)
    readouts = [HMAReadout(8, 3, memory_size=5, slots_per_class=2,
                           label_dim=8, check_inputs=False) for _ in range(3)]
    P = {k: torch.stack([r.state_dict()[k] for r in readouts])
         for k in readouts[0].state_dict()}
    for step in range(4):
        keys = torch.randn(3, 4 + step, 8, generator=gen)
        keys[0, 1, 2] = float('nan')  # skipped
        labels = torch.randint(0, 4, (3, 4 + step), generator=gen)  # 3: bad
        for s, r in enumerate(readouts):
            r.write(keys[s], labels[s])
        write_queues(readouts[0], P, '', keys, labels)
    for s, r in enumerate(readouts):
        for k, v in r.state_dict().items():
            if k.startswith('queue') or k == 'num_skipped_writes':
                assert torch.equal(P[k][s], v), (s, k)
    assert int(readouts[0].num_skipped_writes) > 0

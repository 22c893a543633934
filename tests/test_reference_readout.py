"""HMAReadout(style='reference'): the released HMA module (qiuzh20/HMA,
CIGA-main/models/HMA/model.py and MAB_modules.py), one option at a time and
as a whole, checked against re-implementations of the released formulas."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pyg_hma import HMAClassifier, HMAReadout
from pyg_hma.nn.hma_readout import STYLES
from pyg_hma.nn.utils import MaskedAttentionBlock

D, C, L, M, K = 24, 3, 8, 12, 4


def make(**kwargs):
    kwargs.setdefault('memory_size', M)
    kwargs.setdefault('slots_per_class', K)
    kwargs.setdefault('label_dim', L)
    kwargs.setdefault('dropout', 0.0)
    torch.manual_seed(0)
    return HMAReadout(D, C, **kwargs)


def train_steps(readout, steps=4, batch=6, seed=3, write=True, lr=1e-2):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(readout.parameters(), lr=lr)
    readout.train()
    for _ in range(steps):
        x = torch.randn(batch, D, generator=g)
        y = torch.randint(0, C, (batch, ), generator=g)
        loss = F.cross_entropy(readout(x, y if write else None), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


# --------------------------------------------------------------------------
# Manual re-implementations, written from the released code's formulas
# --------------------------------------------------------------------------
def manual_block(block, tokens, num_queries, mask=None, dropout_seed=None):
    """MaskedAttentionBlock written out; with every reference option on, this
    is the released MAB.forward (pre-LN, ln0 on X, ln0KV on Y, Q/K/V split
    into heads, softmax(QK^T / sqrt(dim_KV)), no fc_mix_heads, dropout,
    X_res = fc_res(X), ln1, rff = Linear-GELU-Dropout-Linear-Dropout)."""
    dim, heads, eps = block.channels, block.heads, block.norm_eps
    p = block.dropout if dropout_seed is not None else 0.0
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
    x = tokens[:num_queries]
    ln_q = block.norm1
    ln_kv = block.norm_kv if block.separate_kv_norm else block.norm1
    xq = F.layer_norm(x, (dim, ), ln_q.weight, ln_q.bias, eps)
    y = F.layer_norm(tokens, (dim, ), ln_kv.weight, ln_kv.bias, eps)
    q = F.linear(xq, block.q_proj.weight, block.q_proj.bias)
    w_k, w_v = block.kv_proj.weight.split(dim)
    b_k, b_v = block.kv_proj.bias.split(dim)
    k, v = F.linear(y, w_k, b_k), F.linear(y, w_v, b_v)
    split = dim // heads
    width = dim if block.attention_scale == 'token' else split
    outs = []
    for h in range(heads):
        sl = slice(h * split, (h + 1) * split)
        logits = q[:, sl] @ k[:, sl].T / math.sqrt(width)
        if mask is not None:
            logits = logits.masked_fill(~mask, -math.inf)
        outs.append(torch.softmax(logits, dim=1) @ v[:, sl])
    out = torch.cat(outs, dim=1)
    if block.out_proj is not None:
        out = block.out_proj(out)
    res = x if block.residual == 'identity' else block.res_proj(x)
    z = res + F.dropout(out, p)
    hidden = F.gelu(block.ffn[0](
        F.layer_norm(z, (dim, ), block.norm2.weight, block.norm2.bias, eps)))
    if block.ffn_hidden_dropout:
        hidden = F.dropout(hidden, p)
    return z + F.dropout(block.ffn[2](hidden), p)


def released_mab(block, X, Y):
    """MAB.forward of the released MAB_modules.py with the settings
    GNNERM_LGMA gives it (pre-LN, sep_res_embed, no mix_heads, softmax,
    layer-norm eps 1e-12, hidden dropout; no null_KV, no topk, no mask),
    taking its weights from one of our blocks: fc_q = q_proj, [fc_k; fc_v] =
    kv_proj, fc_res = res_proj, ln0 = norm1, ln0KV = norm_kv, ln1 = norm2,
    rff = ffn (the dropout there is applied functionally)."""
    dim_kv = X.size(-1)
    num_heads, p = block.heads, block.dropout if block.training else 0.0
    assert block.ffn[0].out_features == 4 * dim_kv  # 4x expansion
    X_multihead = F.layer_norm(X, (dim_kv, ), block.norm1.weight,
                               block.norm1.bias, 1e-12)
    Y = F.layer_norm(Y, (dim_kv, ), block.norm_kv.weight, block.norm_kv.bias,
                     1e-12)
    Q = F.linear(X_multihead, block.q_proj.weight, block.q_proj.bias)
    X_res = F.linear(X, block.res_proj.weight, block.res_proj.bias)
    w_k, w_v = block.kv_proj.weight.split(dim_kv)
    b_k, b_v = block.kv_proj.bias.split(dim_kv)
    K, V = F.linear(Y, w_k, b_k), F.linear(Y, w_v, b_v)
    dim_split = dim_kv // num_heads
    Q_ = torch.cat(Q.split(dim_split, 2), 0)
    K_ = torch.cat(K.split(dim_split, 2), 0)
    V_ = torch.cat(V.split(dim_split, 2), 0)
    A = torch.einsum('ijl,ikl->ijk', Q_, K_)
    A = torch.softmax(A / math.sqrt(dim_kv), 2)
    multihead = A.bmm(V_)
    multihead = torch.cat(multihead.split(Q.size(0), 0), 2)
    H = F.dropout(multihead, p)
    H = H + X_res
    H_rff = F.layer_norm(H, (dim_kv, ), block.norm2.weight, block.norm2.bias,
                         1e-12)
    hidden = F.dropout(F.gelu(block.ffn[0](H_rff)), p)
    return H + F.dropout(block.ffn[2](hidden), p)


def released_forward(readout, x):
    """HMA.forward of the released model.py (label=None): the unknown label
    token, the local memory block over [c1; queue] per sample, the ABD block
    over [batch; global memories] and fc on the label part."""
    batch = x.size(0)
    e = readout.label_emb.weight[C].expand(batch, -1)
    c1 = torch.cat([x, e], dim=1)
    queue = torch.cat([readout.queue_keys, readout.queue_label_tokens], 1)
    c1 = c1.unsqueeze(1)  # bs, 1, d
    local_memory = queue.unsqueeze(0).repeat((c1.shape[0], 1, 1))
    local_memory_c = torch.cat([c1, local_memory], dim=1)  # bs, M + 1, d
    c1 = released_mab(readout.rma_block, c1, local_memory_c).squeeze(1)
    labels = torch.arange(C).repeat_interleave(K)
    glob = torch.cat([readout.slots.reshape(-1, D),
                      readout.label_emb(labels)], dim=1)
    global_memory_c = torch.cat([c1, glob], dim=0)  # bs + C k, d
    c1 = released_mab(readout.sma_block, c1.unsqueeze(0),
                      global_memory_c.unsqueeze(0)).squeeze(0)
    return readout.lin(c1[:, D:])  # logits_resource='label_emb'


# --------------------------------------------------------------------------
# The attention block's options
# --------------------------------------------------------------------------
BLOCK_OPTIONS = [
    dict(),
    dict(attention_scale='token'),
    dict(residual='linear'),
    dict(out_proj=False),
    dict(ffn_ratio=4),
    dict(ffn_hidden_dropout=True),
    dict(separate_kv_norm=True),
    dict(norm_eps=1e-12),
    dict(attention_scale='token', residual='linear', out_proj=False,
         ffn_ratio=4, ffn_hidden_dropout=True, separate_kv_norm=True,
         norm_eps=1e-12),  # the released MAB
]


@pytest.mark.parametrize('options', BLOCK_OPTIONS)
@pytest.mark.parametrize('masked', [False, True])
def test_block_option_matches_manual_formula(options, masked):
    torch.manual_seed(0)
    block = MaskedAttentionBlock(16, 4, dropout=0.3, **options).eval()
    with torch.no_grad():  # LayerNorm affine away from the identity
        for m in block.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    tokens = torch.randn(9, 16) * 3
    mask = None
    if masked:
        mask = torch.rand(4, 9) > 0.4
        mask[:, 0] = True
    expected = manual_block(block, tokens, 4, mask)
    assert torch.allclose(block(tokens, 4, mask), expected, atol=1e-5)
    # Training mode: dropout in the released places (attention output,
    # after the FFN activation if asked, FFN output), same random draws.
    block.train()
    torch.manual_seed(7)
    out = block(tokens, 4, mask)
    assert torch.allclose(out, manual_block(block, tokens, 4, mask,
                                            dropout_seed=7), atol=1e-5)


def test_token_scale_is_one_over_sqrt_token_width():
    # Four heads of width 1 over tokens of width 4, identity projections:
    # head j scores token i by h[0, j] * h[i, j] / sqrt(width), with width 1
    # (head) or 4 (token).
    torch.manual_seed(0)
    for scale, width in (('head', 1), ('token', 4)):
        block = MaskedAttentionBlock(4, 4, attention_scale=scale,
                                     out_proj=False).eval()
        with torch.no_grad():
            block.q_proj.weight.copy_(torch.eye(4))
            block.q_proj.bias.zero_()
            block.kv_proj.weight.copy_(torch.cat([torch.eye(4)] * 2))
            block.kv_proj.bias.zero_()
        tokens = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.0, 3.0, -2.0, 1.0]])
        h = block.norm1(tokens)
        # Head j: scores h[0, j] * h[:, j] / sqrt(width).
        weights = torch.softmax(h[0][:, None] * h.T / math.sqrt(width), 1)
        attended = (weights * h.T).sum(dim=1)
        z = tokens[0] + attended
        expected = z + block.ffn[2](F.gelu(block.ffn[0](block.norm2(z))))
        assert torch.allclose(block(tokens, 1)[0], expected, atol=1e-6)


def test_block_default_has_the_old_submodules_only():
    names = set(dict(MaskedAttentionBlock(8, 2).named_parameters()))
    assert names == {f'{m}.{p}' for m in ('norm1', 'q_proj', 'kv_proj',
                                          'out_proj', 'norm2', 'ffn.0',
                                          'ffn.2') for p in ('weight', 'bias')}
    ref = MaskedAttentionBlock(8, 2, residual='linear', out_proj=False,
                               separate_kv_norm=True, ffn_ratio=4)
    names = set(dict(ref.named_parameters()))
    assert {'norm_kv.weight', 'res_proj.weight'} <= names
    assert not any(n.startswith('out_proj') for n in names)
    assert ref.ffn[0].out_features == 32


# --------------------------------------------------------------------------
# The whole readout
# --------------------------------------------------------------------------
def test_reference_style_sets_every_option():
    readout = make(style='reference')
    assert readout.options == STYLES['reference'] == dict(
        head='label', attention_scale='token', residual='linear',
        out_proj=False, ffn_mult=4, ffn_hidden_dropout=True,
        separate_kv_norm=True, norm_eps=1e-12, slot_init='zeros',
        queue_init='random', queue_stores='label_tokens',
        queue_write='divisible')
    assert readout.head == 'label' and readout.lin.in_features == L
    for block in (readout.rma_block, readout.sma_block):
        assert block.attention_scale == 'token'
        assert block.res_proj is not None and block.out_proj is None
        assert block.ffn[0].out_features == 4 * (D + L)
        assert block.ffn_hidden_dropout and block.norm_kv is not None
        assert block.norm1.eps == block.norm2.eps == block.norm_kv.eps == 1e-12
    # An option given explicitly wins over the style.
    mixed = make(style='reference', slot_init='normal', head='both')
    assert mixed.slot_init == 'normal' and mixed.head == 'both'
    assert mixed.rma_block.attention_scale == 'token'


@pytest.mark.parametrize('train_mode', [False, True])
def test_reference_readout_equals_released_forward(train_mode):
    readout = make(style='reference')
    train_steps(readout, steps=3, batch=6)  # 12 % 6 == 0: writes happen
    assert (readout.queue_labels >= 0).sum() == M  # 18 rows written
    train_steps(readout, steps=1, batch=4, seed=9)
    x = torch.randn(5, D)
    readout.train(train_mode)
    with torch.no_grad():
        ours = readout(x)  # no labels: no write
        expected = released_forward(readout, x)
    assert torch.allclose(ours, expected, atol=1e-5)
    # ... and with a queue still holding random (never written) rows.
    fresh = make(style='reference')
    fresh.train(train_mode)
    with torch.no_grad():
        assert (fresh.queue_labels == -1).all()
        assert torch.allclose(fresh(x), released_forward(fresh, x),
                              atol=1e-5)


def test_reference_block_in_training_is_the_released_mab():
    readout = make(style='reference', dropout=0.3)
    tokens = torch.randn(7, D + L) * 2
    for block in (readout.rma_block, readout.sma_block):
        block.train()
        torch.manual_seed(4)
        ours = block(tokens, 3)
        torch.manual_seed(4)  # the same dropout draws, in the same order
        expected = released_mab(block, tokens[None, :3], tokens[None])[0]
        assert torch.allclose(ours, expected, atol=1e-5)


def test_zero_slots_stay_identical_in_reference_mode():
    for style in ('reference', 'pyg_hma'):
        readout = make(style=style)
        before = readout.slots.detach().clone()
        train_steps(readout, steps=5)
        slots = readout.slots.detach()
        assert not torch.equal(slots, before)  # they are trained
        siblings = slots[:, 1:] - slots[:, :1]  # each slot minus slot 0
        if style == 'reference':  # the released defect, reproduced
            assert torch.equal(before, torch.zeros_like(before))
            assert siblings.abs().max() < 1e-6
        else:
            assert siblings.norm(dim=-1).min() > 1e-3


def test_random_queue_entries_are_attended_in_reference_mode():
    x = torch.randn(5, D)
    for style in ('reference', 'pyg_hma'):
        readout = make(style=style).eval()
        assert (readout.queue_labels == -1).all()  # nothing written
        if style == 'reference':
            rows = torch.cat([readout.queue_keys, readout.queue_label_tokens],
                             dim=1)
            assert torch.allclose(rows.norm(dim=1), torch.ones(M))
            assert readout.memory_mask().all()
        else:
            assert torch.equal(readout.queue_keys, torch.zeros(M, D))
            assert not readout.memory_mask().any()
        out = readout(x)
        with torch.no_grad():
            readout.queue_keys[3] += 5.0  # one unwritten entry
        changed = not torch.allclose(readout(x), out, atol=1e-6)
        assert changed == (style == 'reference')


def test_queue_init_random_with_looked_up_labels_reads_unknown_label():
    readout = make(queue_init='random')  # queue_stores='labels'
    tokens = readout.memory_tokens()
    assert torch.equal(tokens[:, D:],
                       readout.label_emb.weight[C].expand(M, -1))
    readout.write(torch.randn(2, D), torch.tensor([0, 2]))
    tokens = readout.memory_tokens()
    assert torch.equal(tokens[:2, D:], readout.label_emb.weight[[0, 2]])
    assert torch.equal(tokens[2:, D:],
                       readout.label_emb.weight[C].expand(M - 2, -1))
    # Random rows are unit vectors of the whole token width.
    assert (readout.queue_keys[2:].norm(dim=1) < 1).all()


def test_label_token_snapshots_do_not_follow_the_embedding():
    for style in ('reference', 'pyg_hma'):
        readout = make(style=style, queue_write='wrap')
        readout.write(torch.randn(6, D), torch.tensor([0, 1, 2, 0, 1, 2]))
        tokens = readout.memory_tokens()[:6].detach().clone()
        assert torch.equal(tokens[:, D:],
                           readout.label_emb.weight[[0, 1, 2, 0, 1, 2]])
        emb = readout.label_emb.weight.detach().clone()
        train_steps(readout, steps=3, write=False)  # trains label_emb
        assert not torch.allclose(readout.label_emb.weight[:C], emb[:C])
        after = readout.memory_tokens()[:6]
        if style == 'reference':
            assert torch.equal(after, tokens)  # copied at write time
        else:
            assert not torch.allclose(after[:, D:], tokens[:, D:])
            assert torch.equal(after[:, D:],
                               readout.label_emb.weight[[0, 1, 2, 0, 1, 2]])


def test_label_tokens_receive_no_gradient_through_the_queue():
    readout = make(style='reference', synthetic=False, abd=False)
    readout.write(torch.randn(6, D), torch.tensor([0, 1, 2, 0, 1, 2]))
    readout(torch.randn(4, D)).sum().backward()
    # Only the "unknown" row (every input's label) is used by the forward.
    grad = readout.label_emb.weight.grad
    assert grad[:C].abs().sum() == 0 and grad[C].abs().sum() > 0
    default = make(synthetic=False, abd=False)
    default.write(torch.randn(6, D), torch.tensor([0, 1, 2, 0, 1, 2]))
    default(torch.randn(4, D)).sum().backward()
    assert (default.label_emb.weight.grad.abs().sum(dim=1) > 0).all()


def test_divisible_writes_skip_batches_that_do_not_divide_the_queue():
    for mode in ('divisible', 'wrap'):
        readout = make(style='reference' if mode == 'divisible' else 'pyg_hma')
        assert readout.queue_write == mode
        readout.write(torch.randn(5, D), torch.zeros(5, dtype=torch.long))
        if mode == 'divisible':  # 5 does not divide 12: nothing written
            assert int(readout.queue_ptr) == 0
            assert (readout.queue_labels == -1).all()
            assert int(readout.num_skipped_writes) == 5
        else:
            assert int(readout.queue_ptr) == 5
        readout.write(torch.randn(4, D), torch.ones(4, dtype=torch.long))
        assert int(readout.queue_ptr) == (4 if mode == 'divisible' else 9)
        readout.write(torch.randn(0, D), torch.ones(0, dtype=torch.long))
        assert int(readout.queue_ptr) == (4 if mode == 'divisible' else 9)
    # A row refused for its value moves the pointer off the batch grid; the
    # next writes still wrap (the released slice assignment would fail).
    readout = make(queue_write='divisible')
    keys = torch.randn(6, D)
    keys[0, 0] = math.nan
    readout.write(keys, torch.zeros(6, dtype=torch.long))
    for _ in range(2):
        readout.write(torch.randn(6, D), torch.zeros(6, dtype=torch.long))
    assert int(readout.queue_ptr) == (5 + 12) % M
    assert torch.isfinite(readout.queue_keys).all()


def test_queue_write_never_keeps_the_queue_as_initialised():
    # The released Graph-Twitter command: training calls without labels.
    readout = make(style='reference', queue_write='never')
    state = copy.deepcopy(readout.state_dict())
    train_steps(readout, steps=3, batch=6)
    readout.write(torch.randn(6, D), torch.zeros(6, dtype=torch.long))
    for name in ('queue_keys', 'queue_label_tokens', 'queue_labels',
                 'queue_ptr'):
        assert torch.equal(readout.state_dict()[name], state[name]), name
    assert int(readout.num_skipped_writes) == 0


@pytest.mark.parametrize('style', ['pyg_hma', 'reference'])
def test_labels_never_enter_the_prediction(style):
    readout = make(style=style)
    train_steps(readout, steps=2)
    x = torch.randn(6, D)
    state = copy.deepcopy(readout.state_dict())
    outs = []
    for y in (torch.randint(0, C, (6, )), torch.randint(0, C, (6, )), None):
        readout.load_state_dict(state)
        torch.manual_seed(11)  # the same dropout draws
        outs.append(readout(x, y=y))
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[2])
    readout.eval()
    assert torch.equal(readout(x, y=torch.zeros(6).long()), readout(x))


def test_default_state_dict_keys_are_unchanged():
    keys = set(make().state_dict())
    assert not any(k == 'queue_label_tokens' or 'norm_kv' in k
                   or 'res_proj' in k for k in keys)
    expected = {'label_emb.weight', 'slots', 'lin.weight', 'lin.bias',
                'queue_keys', 'queue_labels', 'queue_ptr'}
    for block in ('rma_block', 'sma_block'):
        expected |= {f'{block}.{m}.{p}' for m in (
            'norm1', 'q_proj', 'kv_proj', 'out_proj', 'norm2', 'ffn.0',
            'ffn.2') for p in ('weight', 'bias')}
    assert keys == expected
    # style='pyg_hma' with every option spelled out is the same module.
    explicit = make(style='pyg_hma', **STYLES['pyg_hma'])
    x = torch.randn(5, D)
    assert torch.equal(explicit(x), make()(x))


def test_reference_state_dict_round_trip():
    readout = make(style='reference')
    train_steps(readout, steps=2)
    readout.eval()
    x = torch.randn(5, D)
    out = readout(x)
    state = copy.deepcopy(readout.state_dict())
    assert 'queue_label_tokens' in state
    torch.manual_seed(5)
    fresh = HMAReadout(D, C, memory_size=M, slots_per_class=K, label_dim=L,
                       dropout=0.0, style='reference').eval()
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), out)
    # A default readout refuses the reference keys (strict loading).
    with pytest.raises(RuntimeError, match='queue_label_tokens'):
        make().load_state_dict(state)
    state['queue_label_tokens'][0, 0] = math.inf
    with pytest.raises(ValueError, match='queue_label_tokens'):
        fresh.load_state_dict(state)


def test_reference_non_finite_rows_never_enter_the_queue():
    readout = make(style='reference', check_inputs=False)
    x = torch.randn(6, D)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x[2, 3] = math.nan
    readout(x, y)
    # 6 divides 12, the NaN row is refused and the other five are written.
    assert torch.isfinite(readout.queue_keys).all()
    assert torch.isfinite(readout.queue_label_tokens).all()
    assert torch.equal(readout.queue_keys[:5], x[[0, 1, 3, 4, 5]])
    assert torch.equal(readout.queue_label_tokens[:5],
                       readout.label_emb.weight.detach()[y[[0, 1, 3, 4, 5]]])
    assert int(readout.queue_ptr) == 5
    assert int(readout.num_skipped_writes) == 1
    readout.eval()
    assert torch.isfinite(readout(torch.randn(4, D))).all()


@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_reference_non_finite_sample_affects_only_itself(bad):
    readout = make(style='reference', inference='independent')
    train_steps(readout, steps=2)
    readout.eval()
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    others = [0, 1, 3, 4]
    clean = readout(x[others])
    x[2, 5] = bad
    out = readout(x)
    assert not torch.isfinite(out[2]).any()
    assert torch.allclose(out[others], clean, atol=1e-6)


def test_classifier_writes_label_tokens_in_reference_mode():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, D), torch.nn.ReLU())
    model = HMAClassifier(encoder, make(style='reference'), momentum=0.5)
    inputs, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 1, 0, 2])
    model(inputs, y=y)
    readout = model.readout
    assert torch.allclose(readout.queue_keys[:6],
                          model.momentum_encoder(inputs))
    assert torch.equal(readout.queue_label_tokens[:6],
                       readout.label_emb.weight.detach()[y])
    assert torch.equal(readout.queue_labels[:6], y)


def test_repr_names_the_style_and_the_options_set_apart():
    text = repr(make(style='reference'))
    assert text == (
        'HMAReadout(24, 3, memory_size=12, slots_per_class=4, label_dim=8, '
        "heads=4, dropout=0.0, rma=True, abd=True, synthetic=True, "
        "inference='batch', head='label', style='reference')")
    text = repr(make(style='reference', slot_init='normal', ffn_mult=2))
    assert text.endswith("head='label', style='reference', ffn_mult=2, "
                         "slot_init='normal')")
    text = repr(make(attention_scale='token', norm_eps=1e-12))
    assert text.endswith("head='both', attention_scale='token', "
                         "norm_eps=1e-12)")
    # The repr is a constructor call that rebuilds the same module.
    built = eval(text, {'HMAReadout': HMAReadout})
    assert built.options == make(attention_scale='token',
                                 norm_eps=1e-12).options


@pytest.mark.parametrize('kwargs,match', [
    (dict(style='released'), 'style'),
    (dict(attention_scale='dim'), 'attention_scale'),
    (dict(residual='gated'), 'residual'),
    (dict(slot_init='uniform'), 'slot_init'),
    (dict(queue_init='zeros'), 'queue_init'),
    (dict(queue_stores='keys'), 'queue_stores'),
    (dict(queue_write='always'), 'queue_write'),
    (dict(ffn_mult=0), 'ffn_mult'),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_runner_settings_accept_the_style_and_options():
    from pyg_hma.runners.cli import parse_setting
    from pyg_hma.runners.spec import check_settings
    section, name, value = parse_setting('hma.style=reference')
    assert (section, name, value) == ('hma', 'style', 'reference')
    settings = {'train': {}, 'backbone': {},
                'hma': {'style': 'reference', 'ffn_mult': 4,
                        'queue_write': 'wrap', 'norm_eps': 1e-12}}
    check_settings(settings, ['gcn'])  # does not raise
    with pytest.raises(ValueError, match='styel'):
        check_settings({'train': {}, 'backbone': {},
                        'hma': {'styel': 'reference'}}, ['gcn'])


def test_reference_readout_is_its_own_class_with_the_same_state():
    from pyg_hma.models import build_model
    from pyg_hma.nn import ReferenceHMAReadout
    torch.manual_seed(0)
    styled = make(style='reference')
    torch.manual_seed(0)
    own = ReferenceHMAReadout(styled.in_channels, styled.num_classes,
                              memory_size=styled.memory_size,
                              slots_per_class=styled.slots_per_class,
                              label_dim=styled.label_dim, heads=styled.heads,
                              dropout=styled.dropout)
    assert own.options == styled.options == STYLES['reference']
    assert repr(own).startswith('ReferenceHMAReadout(')
    for k, v in styled.state_dict().items():
        assert torch.equal(v, own.state_dict()[k]), k
    x, y = torch.randn(6, styled.in_channels), torch.tensor([0, 1] * 3)
    styled.eval()
    own.eval()
    assert torch.equal(styled(x), own(x))
    with pytest.raises(ValueError, match='HMAReadout for style'):
        ReferenceHMAReadout(8, 2, style='pyg_hma')
    # What the runners build for --set hma.style=reference.
    model = build_model('gcn', 'hma', num_classes=2, num_features=3,
                        backbone_kwargs=dict(hidden_channels=16),
                        hma_kwargs=dict(style='reference', label_dim=16))
    assert type(model.readout) is ReferenceHMAReadout

"""Heterogeneous Memory Augmentation (HMA) readout."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hma_functional import (memory_mask, memory_tokens, readout_forward,
                             write_queues)
from .stacked import GLOBAL_NOISE, stacked_state
from .utils import MaskedAttentionBlock

_HEADS = ('both', 'feature', 'label')
_INFERENCE = ('batch', 'independent')

#: The options every style sets, and their values. ``'pyg_hma'`` is this
#: project's readout; ``'reference'`` reproduces the HMA module of the
#: released code (qiuzh20/HMA, ``CIGA-main/models/HMA/model.py`` and
#: ``MAB_modules.py``), defects included; see ``docs/hma.md``.
STYLES = {
    'pyg_hma': dict(head='both', attention_scale='head',
                    residual='identity', out_proj=True, ffn_mult=2,
                    ffn_hidden_dropout=False, separate_kv_norm=False,
                    norm_eps=1e-5, slot_init='normal', queue_init='empty',
                    queue_stores='labels', queue_write='wrap'),
    'reference': dict(head='label', attention_scale='token',
                      residual='linear', out_proj=False, ffn_mult=4,
                      ffn_hidden_dropout=True, separate_kv_norm=True,
                      norm_eps=1e-12, slot_init='zeros', queue_init='random',
                      queue_stores='label_tokens', queue_write='divisible'),
}
_CHOICES = dict(slot_init=('normal', 'zeros'),
                queue_init=('empty', 'random'),
                queue_stores=('labels', 'label_tokens'),
                queue_write=('wrap', 'divisible', 'never'))


def _style_options(style: str, given: dict) -> dict:
    # Every style option of HMAReadout: the given value, else the style's;
    # checked.
    if style not in STYLES:
        raise ValueError(f"style must be one of {tuple(STYLES)} (got "
                         f"'{style}')")
    options = {name: STYLES[style][name] if value is None else value
               for name, value in given.items()}
    if options['ffn_mult'] < 1:
        raise ValueError(f"ffn_mult must be >= 1 (got "
                         f"{options['ffn_mult']})")
    for name, choices in _CHOICES.items():
        if options[name] not in choices:
            raise ValueError(f"{name} must be one of {choices} (got "
                             f"'{options[name]}')")
    return options


def _check_sizes(in_channels: int, num_classes: int, label_dim: int,
                 heads: int, rma: bool, memory_size: int, synthetic: bool,
                 slots_per_class: int, inference: str, head: str):
    # HMAReadout's sizes and modes, checked.
    if in_channels < 1 or num_classes < 2:
        raise ValueError(f"HMAReadout needs in_channels >= 1 and "
                         f"num_classes >= 2 (got {in_channels}, "
                         f"{num_classes})")
    if label_dim < 1 or heads < 1:
        raise ValueError(f"HMAReadout needs label_dim >= 1 (the label "
                         f"embedding the memory tokens carry) and heads "
                         f">= 1 (got label_dim={label_dim}, "
                         f"heads={heads})")
    if rma and memory_size < 1:
        raise ValueError(f"rma=True needs memory_size >= 1 (got "
                         f"{memory_size})")
    if synthetic and slots_per_class < 1:
        raise ValueError(f"synthetic=True needs slots_per_class >= 1 "
                         f"(got {slots_per_class})")
    if inference not in _INFERENCE:
        raise ValueError(f"inference must be one of {_INFERENCE} "
                         f"(got '{inference}')")
    if head not in _HEADS:
        raise ValueError(f"head must be one of {_HEADS} (got '{head}')")
    channels = in_channels + label_dim
    if channels % heads != 0:
        raise ValueError(
            f"in_channels + label_dim = {channels} must be divisible by "
            f"heads={heads}; change label_dim or heads")


class HMAReadout(nn.Module):
    r"""The Heterogeneous Memory Augmentation readout from the
    "Heterogeneous Memory Augmented Neural Networks" paper (Qiu et al.).

    It turns pooled graph embeddings :math:`\mathbf{h}_i \in \mathbb{R}^d`
    into logits by letting them attend over a memory of *real* past samples
    (RMA) and over *synthetic* learnable slots (SMA):

    1. **Label token.** Every input gets the embedding of an extra
       "unknown" label, so no label leaks into the prediction:
       :math:`\mathbf{x}_i = [\mathbf{h}_i \,\|\, \mathbf{E}_{C}]`, with
       :math:`\mathbf{E} \in \mathbb{R}^{(C+1) \times l}`.
    2. **RMA.** A FIFO queue of :math:`M` past keys
       :math:`\mathbf{k}_j` (written by a momentum copy of the backbone)
       with their true labels :math:`y_j`. Each sample attends over itself
       plus the queue in one pre-LN transformer block:
       :math:`\mathbf{x}_i \leftarrow \mathrm{Block}(\mathbf{x}_i;
       \{\mathbf{x}_i\} \cup \{[\mathbf{k}_j \| \mathbf{E}_{y_j}]\}_{j\le M})`.
    3. **SMA.** :math:`k` learnable slots :math:`\mathbf{s}_{c,r}` per class,
       each joined with its class's label embedding; the batch attends
       *across datapoints* over :math:`[\mathbf{X}; \mathbf{S}]`:
       :math:`\mathbf{x}_i \leftarrow \mathrm{Block}(\mathbf{x}_i;
       \{\mathbf{x}_b\}_{b \in \mathcal{B}} \cup
       \{[\mathbf{s}_{c,r} \| \mathbf{E}_c]\})`.
    4. A linear head gives the logits.

    The queue is written only in training mode and only when labels are
    given; writes wrap around for any batch size (see :obj:`queue_write`).
    Queue contents and the write pointer are registered buffers, so they are
    saved in the :obj:`state_dict`. Empty queue entries are masked out of the
    attention (see :obj:`queue_init`).

    The queue stays finite: rows with a NaN or Inf key, or a label outside
    ``[0, num_classes)``, are never written (skipped on the device, without
    a host sync; counted in the non-persistent buffer
    :obj:`num_skipped_writes`), and :meth:`load_state_dict` refuses a queue
    with out-of-range labels, a non-finite key (or label token) or an
    out-of-range pointer, in every style.
    A non-finite sample only affects the outputs of the samples that attend
    to it: under :obj:`inference="independent"` in eval mode, its own.

    **Distributed training.** The queue write gathers the keys of every
    :mod:`torch.distributed` rank (in rank order), so all ranks keep the
    same queue. Set :obj:`abd_across_ranks` to :obj:`True` (the engine's
    ``fit(..., ddp=True)`` does) and, in training mode, the SMA block's
    queries (the local batch) attend over the batch tokens of *every* rank
    plus the slots, gathered with their gradients: the attention across
    datapoints then sees the global batch, as one process would. Eval mode
    never gathers (the engine scores whole batches on each rank).

    **Styles.** :obj:`style="reference"` reproduces the HMA module of the
    released code (qiuzh20/HMA), defects included, so that its numbers can
    be compared with this project's: the blocks scale the scores by
    :math:`1/\sqrt{d+l}`, use a learned linear residual, no output
    projection, a :math:`4\times` feed-forward with dropout after the
    activation, separate LayerNorms for queries and keys/values
    (:math:`\epsilon = 10^{-12}`); the slots start at zero (so the :math:`k`
    slots of a class stay identical); the queue starts as :math:`M` random
    unit vectors of width :math:`d+l` that are never masked, stores label
    *tokens* :math:`\mathbf{E}_{y_j}` copied at write time, and skips a
    write unless the batch size divides :math:`M`; the head reads the label
    part only. Each of these is also an option of its own (below); an option
    left at :obj:`None` takes its style's value. The default
    :obj:`style="pyg_hma"` is the behaviour described above. The table in
    ``docs/hma.md`` cites the released source for every difference.

    .. warning::
        With :obj:`inference="batch"` (the paper's behaviour) a sample's
        prediction in eval mode depends on which other samples share its
        batch, because of the attention across datapoints. Use
        :obj:`inference="independent"` for batch-independent predictions: in
        eval mode each sample then attends only to itself, the slots and the
        queue.

    Args:
        in_channels (int): size :math:`d` of the pooled embeddings.
        num_classes (int): number of classes :math:`C` (2 for binary tasks).
        out_channels (int, optional): number of logits. Defaults to
            :obj:`num_classes`; use :obj:`1` for a binary BCE head.
        memory_size (int, optional): queue length :math:`M`.
            (default: :obj:`256`)
        slots_per_class (int, optional): synthetic slots :math:`k` per class.
            (default: :obj:`8`)
        label_dim (int, optional): label embedding size :math:`l`.
            (default: :obj:`16`)
        heads (int, optional): attention heads; must divide
            :obj:`in_channels + label_dim`. (default: :obj:`4`)
        dropout (float, optional): dropout in both blocks.
            (default: :obj:`0.1`)
        rma (bool, optional): use the real-memory (queue) block.
            (default: :obj:`True`)
        abd (bool, optional): let the batch attend across datapoints in the
            SMA block. (default: :obj:`True`)
        synthetic (bool, optional): add the learnable slots to the SMA block.
            (default: :obj:`True`)
        inference (str, optional): :obj:`"batch"` or :obj:`"independent"`
            (see the warning). (default: :obj:`"batch"`)
        head (str, optional): which part of the output token the linear head
            reads: :obj:`"both"` (feature and label parts), :obj:`"feature"`
            (:math:`d` dims) or :obj:`"label"` (:math:`l` dims).
            (default: the style's: :obj:`"both"`; :obj:`"label"` for
            :obj:`"reference"`)
        check_inputs (bool, optional): validate label range and finiteness of
            the features. These checks synchronise with the device; switch
            them off in tight training loops. Shape and dtype checks always
            run. (default: :obj:`True`)
        style (str, optional): :obj:`"pyg_hma"` (this project's readout) or
            :obj:`"reference"` (the released code's module); sets every
            option below that is left at :obj:`None`.
            (default: :obj:`"pyg_hma"`)
        attention_scale (str, optional): divide the attention scores by the
            square root of the :obj:`"head"` width :math:`(d+l)/H` or of the
            whole :obj:`"token"` width :math:`d+l`. (default: the style's:
            :obj:`"head"`; :obj:`"token"` for :obj:`"reference"`)
        residual (str, optional): the attention residual is the query token
            (:obj:`"identity"`) or a learned :obj:`"linear"` map of it.
            (default: the style's: :obj:`"identity"`; :obj:`"linear"`)
        out_proj (bool, optional): a linear output projection after the
            attention heads. (default: the style's: :obj:`True`;
            :obj:`False`)
        ffn_mult (int, optional): feed-forward hidden size relative to
            :math:`d+l`. (default: the style's: :obj:`2`; :obj:`4`)
        ffn_hidden_dropout (bool, optional): dropout also after the
            feed-forward activation. (default: the style's: :obj:`False`;
            :obj:`True`)
        separate_kv_norm (bool, optional): a LayerNorm for the keys/values
            of its own, apart from the queries'. (default: the style's:
            :obj:`False`; :obj:`True`)
        norm_eps (float, optional): :math:`\epsilon` of every LayerNorm.
            (default: the style's: :obj:`1e-5`; :obj:`1e-12`)
        slot_init (str, optional): slots drawn :obj:`"normal"`
            :math:`\mathcal{N}(0, 1/d)` or set to :obj:`"zeros"` (the
            released code's; all :math:`k` slots of a class then get
            identical gradients and stay identical). (default: the style's:
            :obj:`"normal"`; :obj:`"zeros"`)
        queue_init (str, optional): :obj:`"empty"`: the queue starts empty
            and empty entries are masked out; :obj:`"random"`: it starts as
            random unit vectors of width :math:`d+l` (feature and label part)
            and no entry is ever masked. Random entries hold no label
            (:obj:`queue_labels` is :obj:`-1`); with
            :obj:`queue_stores="labels"` they read the "unknown" label
            embedding. (default: the style's: :obj:`"empty"`;
            :obj:`"random"`)
        queue_stores (str, optional): :obj:`"labels"`: the label embedding
            of a queue row is looked up at read time (current, and trained
            through the queue); :obj:`"label_tokens"`: it is copied into the
            buffer :obj:`queue_label_tokens` at write time and never changes
            afterwards. (default: the style's: :obj:`"labels"`;
            :obj:`"label_tokens"`)
        queue_write (str, optional): :obj:`"wrap"`: any number of rows is
            written, wrapping around; :obj:`"divisible"`: a write of
            :math:`n` rows is skipped altogether unless :math:`n` divides
            :math:`M` (rows written still wrap, where the released code would
            fail); :obj:`"never"`: the queue is never written (as in the
            released Graph-Twitter command, whose training calls pass no
            labels). (default: the style's: :obj:`"wrap"`;
            :obj:`"divisible"`)

    Shapes:
        - **input:**
          embeddings :math:`(B, d)`,
          labels :math:`(B)` or :math:`(B, 1)` integer *(optional)*,
          keys :math:`(B, d)` *(optional)*
        - **output:** logits :math:`(B, \text{out\_channels})`
    """
    queue_keys: Tensor
    queue_labels: Tensor
    queue_ptr: Tensor
    queue_label_tokens: Optional[Tensor]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        out_channels: Optional[int] = None,
        memory_size: int = 256,
        slots_per_class: int = 8,
        label_dim: int = 16,
        heads: int = 4,
        dropout: float = 0.1,
        rma: bool = True,
        abd: bool = True,
        synthetic: bool = True,
        inference: str = 'batch',
        head: Optional[str] = None,
        check_inputs: bool = True,
        style: str = 'pyg_hma',
        attention_scale: Optional[str] = None,
        residual: Optional[str] = None,
        out_proj: Optional[bool] = None,
        ffn_mult: Optional[int] = None,
        ffn_hidden_dropout: Optional[bool] = None,
        separate_kv_norm: Optional[bool] = None,
        norm_eps: Optional[float] = None,
        slot_init: Optional[str] = None,
        queue_init: Optional[str] = None,
        queue_stores: Optional[str] = None,
        queue_write: Optional[str] = None,
    ):
        super().__init__()
        options = _style_options(
            style, dict(head=head, attention_scale=attention_scale,
                        residual=residual, out_proj=out_proj,
                        ffn_mult=ffn_mult,
                        ffn_hidden_dropout=ffn_hidden_dropout,
                        separate_kv_norm=separate_kv_norm, norm_eps=norm_eps,
                        slot_init=slot_init, queue_init=queue_init,
                        queue_stores=queue_stores, queue_write=queue_write))
        head = options['head']
        _check_sizes(in_channels, num_classes, label_dim, heads, rma,
                     memory_size, synthetic, slots_per_class, inference, head)
        channels = in_channels + label_dim

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.out_channels = num_classes if out_channels is None else out_channels
        self.memory_size = memory_size if rma else 0
        self.slots_per_class = slots_per_class if synthetic else 0
        self.label_dim = label_dim
        self.heads = heads
        self.dropout = dropout
        self.rma = rma
        self.abd = abd
        self.synthetic = synthetic
        self.inference = inference
        self.head = head
        self.check_inputs = check_inputs
        self.style = style
        #: Every style option's value (the style's, unless given).
        self.options = options
        self.slot_init = options['slot_init']
        self.queue_init = options['queue_init']
        self.queue_stores = options['queue_stores']
        self.queue_write = options['queue_write']
        #: Training under :mod:`torch.distributed` (see the class notes):
        #: the SMA block attends over every rank's batch, not the local one.
        self.abd_across_ranks = False

        # Row `num_classes` is the "unknown" label given to every input.
        self.label_emb = nn.Embedding(num_classes + 1, label_dim)
        block = dict(
            ffn_ratio=options['ffn_mult'],
            attention_scale=options['attention_scale'],
            residual=options['residual'], out_proj=options['out_proj'],
            ffn_hidden_dropout=options['ffn_hidden_dropout'],
            separate_kv_norm=options['separate_kv_norm'],
            norm_eps=options['norm_eps'])
        self.rma_block = (MaskedAttentionBlock(channels, heads, dropout,
                                               **block)
                          if rma else None)
        self.sma_block = (MaskedAttentionBlock(channels, heads, dropout,
                                               **block)
                          if (abd or synthetic) else None)
        self.slots = (nn.Parameter(
            torch.empty(num_classes, slots_per_class, in_channels))
                      if synthetic else None)
        head_in = {'both': channels, 'feature': in_channels,
                   'label': label_dim}[head]
        self.lin = nn.Linear(head_in, self.out_channels)

        self.register_buffer('queue_keys',
                             torch.zeros(self.memory_size, in_channels))
        # -1 marks an empty entry; empty entries are masked out of attention.
        self.register_buffer(
            'queue_labels', torch.full((self.memory_size, ), -1,
                                       dtype=torch.long))
        self.register_buffer('queue_ptr', torch.zeros((), dtype=torch.long))
        # Label tokens copied at write time (queue_stores='label_tokens'
        # only, so that default state dicts keep their keys).
        self.register_buffer(
            'queue_label_tokens',
            torch.zeros(self.memory_size, label_dim)
            if self.queue_stores == 'label_tokens' else None)
        # Rows refused by write() (non-finite key or label token, invalid
        # label, or a whole write skipped by queue_write='divisible') since
        # construction. A diagnostic: not saved, so state dicts of older
        # versions load unchanged.
        self.register_buffer('num_skipped_writes',
                             torch.zeros((), dtype=torch.long),
                             persistent=False)
        # Class of every slot row, fixed: kept out of the state_dict.
        self.register_buffer(
            'slot_labels', torch.arange(num_classes).repeat_interleave(
                self.slots_per_class), persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters (and the memory)."""
        self.label_emb.reset_parameters()
        for block in (self.rma_block, self.sma_block):
            if block is not None:
                block.reset_parameters()
        if self.slots is not None:
            if self.slot_init == 'zeros':  # the released code's defect
                nn.init.zeros_(self.slots)
            else:
                # Distinct small random slots: with a shared (e.g. zero) init
                # all k slots of a class get identical gradients and stay
                # identical.
                nn.init.normal_(self.slots,
                                std=1.0 / math.sqrt(self.in_channels))
        self.lin.reset_parameters()
        self.reset_memory()

    def reset_memory(self):
        r"""Empties the queue (with :obj:`queue_init="random"`: refills it
        with fresh random unit vectors, which hold no label)."""
        self.queue_keys.zero_()
        self.queue_labels.fill_(-1)
        self.queue_ptr.zero_()
        if self.queue_label_tokens is not None:
            self.queue_label_tokens.zero_()
        if self.queue_init == 'random' and self.memory_size:
            # As the released code: randn rows of the whole token width,
            # normalised to unit length.
            rows = F.normalize(torch.randn(
                self.memory_size, self.in_channels + self.label_dim,
                device=self.queue_keys.device), dim=1)
            self.queue_keys.copy_(rows[:, :self.in_channels])
            if self.queue_label_tokens is not None:
                self.queue_label_tokens.copy_(rows[:, self.in_channels:])

    # ------------------------------------------------------------------ #

    def _check(self, x: Tensor, y: Optional[Tensor], key: Optional[Tensor]):
        if x.dim() != 2 or x.size(1) != self.in_channels:
            raise ValueError(
                f"HMAReadout expected embeddings of shape [B, "
                f"{self.in_channels}], got {list(x.shape)}")
        if x.size(0) == 0:
            raise ValueError("HMAReadout got an empty batch (B = 0)")
        if not x.is_floating_point():
            raise TypeError(f"HMAReadout expected floating point embeddings, "
                            f"got {x.dtype}")
        dtype = self.lin.weight.dtype
        if x.dtype != dtype:
            raise TypeError(f"HMAReadout holds {dtype} weights but got "
                            f"{x.dtype} embeddings; convert one to the other "
                            f"(x.to({dtype}) or readout.to({x.dtype}))")
        if key is not None and not key.is_floating_point():
            raise TypeError(f"HMAReadout expected floating point keys (the "
                            f"key encoder's embeddings, like x), got "
                            f"{key.dtype}")
        if key is not None and key.shape != x.shape:
            raise ValueError(f"HMAReadout expected keys of shape "
                             f"{list(x.shape)} (like x), got {list(key.shape)}")
        if y is not None:
            if y.dtype in (torch.bool, ) or y.is_floating_point() or \
                    y.is_complex():
                raise TypeError(
                    f"HMAReadout expected integer class labels, got {y.dtype}"
                    f" (convert with y.long())")
            if y.numel() != x.size(0) or (y.dim() == 2 and y.size(1) != 1) \
                    or y.dim() > 2:
                raise ValueError(
                    f"HMAReadout expected labels of shape [{x.size(0)}] or "
                    f"[{x.size(0)}, 1], got {list(y.shape)}")
        if not self.check_inputs:
            return
        if y is not None:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"HMAReadout labels must lie in [0, {self.num_classes - 1}]"
                    f" (num_classes={self.num_classes}), got values in "
                    f"[{low}, {high}]")
        if self.training:
            for name, t in (('embeddings', x), ('keys', key)):
                if t is not None and not bool(torch.isfinite(t).all()):
                    raise ValueError(f"HMAReadout got NaN or Inf in its "
                                     f"{name} during training")

    def memory_tokens(self) -> Tensor:
        r"""The queue as the RMA block reads it: :math:`(M, d + l)` tokens
        :math:`[\mathbf{k}_j \| \mathbf{E}_{y_j}]` (the label part looked
        up now, or the copy made at write time with
        :obj:`queue_stores="label_tokens"`)."""
        return memory_tokens(self, stacked_state(self), '').squeeze(0)

    def memory_mask(self) -> Tensor:
        r"""Which queue entries the RMA block attends to, :math:`(M)`: the
        filled ones, or all of them with :obj:`queue_init="random"`."""
        return memory_mask(self, stacked_state(self), '').squeeze(0)

    def forward(self, x: Tensor, y: Optional[Tensor] = None,
                key: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): pooled embeddings :math:`(B, d)`.
            y (torch.Tensor, optional): labels. Only written into the queue
                (in training mode); never used to predict.
            key (torch.Tensor, optional): the momentum encoder's embeddings of
                the same batch, written into the queue instead of
                :obj:`x.detach()`.
        """
        self._check(x, y, key)
        # The readout's one definition (hma_functional), as a group of one.
        out = readout_forward(
            self, stacked_state(self), '', x.unsqueeze(0),
            None if y is None else y.reshape(1, -1),
            None if key is None else key.unsqueeze(0), GLOBAL_NOISE,
            self.training)
        return out.squeeze(0)

    @torch.no_grad()
    def write(self, keys: Tensor, labels: Tensor):
        r"""Writes :obj:`keys` with their :obj:`labels` into the FIFO queue
        (after gathering them from every distributed rank). Called by
        :meth:`forward` in training mode; exposed for custom loops.

        Any number of rows wraps around correctly; with more rows than the
        queue holds, the newest :obj:`memory_size` rows are kept. With
        :obj:`queue_write="divisible"` a write of :math:`n` rows (after the
        gather) is skipped altogether unless :math:`n` divides
        :obj:`memory_size`, as in the released code. With
        :obj:`queue_stores="label_tokens"` the current label embeddings of
        :obj:`labels` are copied into :obj:`queue_label_tokens`. With
        :obj:`queue_write="never"` nothing is written (nor counted).

        Rows with a non-finite key (or label token) or a label outside
        ``[0, num_classes)`` are skipped (the others keep their order and the
        pointer advances by the number written) and counted in
        :obj:`num_skipped_writes`, as are the rows of a skipped write. This
        runs on the device without a host sync."""
        write_queues(self, stacked_state(self), '', keys.unsqueeze(0),
                     labels.reshape(1, -1))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A corrupt queue would make every later prediction NaN (non-finite
        # keys) or crash the label embedding (labels >= num_classes + 1):
        # refuse it here, with the reason.
        labels = state_dict.get(prefix + 'queue_labels')
        if labels is not None and labels.numel():
            low, high = int(labels.min()), int(labels.max())
            if labels.is_floating_point() or low < -1 or \
                    high >= self.num_classes:
                raise ValueError(
                    f"HMAReadout state dict: {prefix}queue_labels must be "
                    f"integers in [-1, {self.num_classes - 1}] (-1 = empty, "
                    f"num_classes={self.num_classes}), got values in "
                    f"[{low}, {high}]; the checkpoint is corrupt or belongs "
                    f"to a model with more classes")
        keys = state_dict.get(prefix + 'queue_keys')
        if keys is not None and keys.is_floating_point() and \
                not bool(torch.isfinite(keys).all()):
            raise ValueError(
                f"HMAReadout state dict: {prefix}queue_keys holds NaN or Inf;"
                f" the checkpoint is corrupt (reset the memory with "
                f"reset_memory() after loading a cleaned copy)")
        tokens = state_dict.get(prefix + 'queue_label_tokens')
        if tokens is not None and tokens.is_floating_point() and \
                not bool(torch.isfinite(tokens).all()):
            raise ValueError(
                f"HMAReadout state dict: {prefix}queue_label_tokens holds NaN"
                f" or Inf; the checkpoint is corrupt")
        ptr = state_dict.get(prefix + 'queue_ptr')
        if ptr is not None and ptr.numel() == 1 and self.memory_size and \
                not 0 <= int(ptr) < self.memory_size:
            raise ValueError(
                f"HMAReadout state dict: {prefix}queue_ptr is {int(ptr)}, "
                f"outside [0, {self.memory_size - 1}]; the checkpoint is "
                f"corrupt or has another memory_size")
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def __repr__(self) -> str:
        args = [str(self.in_channels), str(self.num_classes)]
        if self.out_channels != self.num_classes:
            args.append(f'out_channels={self.out_channels}')
        args += [f'memory_size={self.memory_size}',
                 f'slots_per_class={self.slots_per_class}',
                 f'label_dim={self.label_dim}', f'heads={self.heads}',
                 f'dropout={self.dropout}', f'rma={self.rma}',
                 f'abd={self.abd}', f'synthetic={self.synthetic}',
                 f'inference={self.inference!r}', f'head={self.head!r}']
        if not self.check_inputs:
            args.append('check_inputs=False')
        if self.style != 'pyg_hma':
            args.append(f'style={self.style!r}')
        # The options set apart from the style (head is printed above).
        preset = STYLES[self.style]
        args += [f'{name}={value!r}' for name, value in self.options.items()
                 if name != 'head' and value != preset[name]]
        return f'{self.__class__.__name__}({", ".join(args)})'

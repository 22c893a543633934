"""Heterogeneous Memory Augmentation (HMA) readout."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .utils import MaskedAttentionBlock, gather_from_all_ranks

_HEADS = ('both', 'feature', 'label')
_INFERENCE = ('batch', 'independent')


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
    given; writes wrap around for any batch size. Queue contents and the write
    pointer are registered buffers, so they are saved in the
    :obj:`state_dict`. Empty queue entries are masked out of the attention.

    The queue stays finite: rows with a NaN or Inf key, or a label outside
    ``[0, num_classes)``, are never written (skipped on the device, without
    a host sync; counted in the non-persistent buffer
    :obj:`num_skipped_writes`), and :meth:`load_state_dict` refuses a queue
    with out-of-range labels, a non-finite key or an out-of-range pointer.
    A non-finite sample only affects the outputs of the samples that attend
    to it: under :obj:`inference="independent"` in eval mode, its own.

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
            (default: :obj:`"both"`)
        check_inputs (bool, optional): validate label range and finiteness of
            the features. These checks synchronise with the device; switch
            them off in tight training loops. Shape and dtype checks always
            run. (default: :obj:`True`)

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
        head: str = 'both',
        check_inputs: bool = True,
    ):
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"HMAReadout needs in_channels >= 1 and "
                             f"num_classes >= 2 (got {in_channels}, "
                             f"{num_classes})")
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

        # Row `num_classes` is the "unknown" label given to every input.
        self.label_emb = nn.Embedding(num_classes + 1, label_dim)
        self.rma_block = (MaskedAttentionBlock(channels, heads, dropout)
                          if rma else None)
        self.sma_block = (MaskedAttentionBlock(channels, heads, dropout)
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
        # Rows refused by write() (non-finite key or invalid label) since
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
            # Distinct small random slots: with a shared (e.g. zero) init all
            # k slots of a class get identical gradients and stay identical.
            nn.init.normal_(self.slots, std=1.0 / math.sqrt(self.in_channels))
        self.lin.reset_parameters()
        self.reset_memory()

    def reset_memory(self):
        r"""Empties the queue."""
        self.queue_keys.zero_()
        self.queue_labels.fill_(-1)
        self.queue_ptr.zero_()

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

    def _label_tokens(self, feats: Tensor, labels: Tensor) -> Tensor:
        return torch.cat([feats, self.label_emb(labels)], dim=-1)

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
        batch_size = x.size(0)
        unknown = self.label_emb.weight[self.num_classes]
        z = torch.cat([x, unknown.expand(batch_size, -1)], dim=-1)
        eye = torch.eye(batch_size, dtype=torch.bool, device=x.device)

        if self.rma_block is not None:
            # Each sample attends over itself (the diagonal) and the filled
            # queue entries; never over the rest of the batch.
            memory = self._label_tokens(self.queue_keys,
                                        self.queue_labels.clamp(min=0))
            filled = (self.queue_labels >= 0).expand(batch_size, -1)
            mask = torch.cat([eye, filled], dim=1)
            z = self.rma_block(torch.cat([z, memory], dim=0), batch_size, mask)

        if self.sma_block is not None:
            tokens = [z]
            if self.slots is not None:
                tokens.append(self._label_tokens(
                    self.slots.reshape(-1, self.in_channels),
                    self.slot_labels))
            across = self.abd and (self.training
                                   or self.inference == 'batch')
            mask = None
            if not across:  # each sample sees itself and the slots only
                mask = torch.cat([eye, eye.new_ones(batch_size,
                                                    self.slot_labels.numel())],
                                 dim=1)
            z = self.sma_block(torch.cat(tokens, dim=0), batch_size, mask)

        if self.head == 'feature':
            z = z[:, :self.in_channels]
        elif self.head == 'label':
            z = z[:, self.in_channels:]
        out = self.lin(z)

        if self.training and y is not None and self.rma:
            self.write(x.detach() if key is None else key.detach(), y)
        return out

    @torch.no_grad()
    def write(self, keys: Tensor, labels: Tensor):
        r"""Writes :obj:`keys` with their :obj:`labels` into the FIFO queue
        (after gathering them from every distributed rank). Called by
        :meth:`forward` in training mode; exposed for custom loops.

        Any number of rows wraps around correctly; with more rows than the
        queue holds, the newest :obj:`memory_size` rows are kept.

        Rows with a non-finite key or a label outside ``[0, num_classes)``
        are skipped (the others keep their order and the pointer advances by
        the number written) and counted in :obj:`num_skipped_writes`. This
        runs on the device without a host sync."""
        if self.memory_size == 0:
            return
        keys, labels = gather_from_all_ranks(keys.detach(),
                                             labels.view(-1).long())
        keys = keys.to(self.queue_keys.dtype)
        size = self.memory_size
        valid = (torch.isfinite(keys).all(dim=1) & (labels >= 0)
                 & (labels < self.num_classes))
        count = valid.sum()
        pos = valid.cumsum(0) - 1  # position among the valid rows
        # The newest `size` valid rows; older ones would be overwritten.
        kept = valid & (pos >= count - size)
        # Rows not kept go to a spare row `size`, dropped afterwards: indices
        # stay on the device and kept rows never share a slot.
        index = torch.where(kept, (self.queue_ptr + pos) % size,
                            torch.full_like(pos, size))
        spare_keys = torch.cat([self.queue_keys,
                                self.queue_keys.new_zeros(1, keys.size(1))])
        spare_keys.index_copy_(0, index, torch.where(kept[:, None], keys,
                                                     keys.new_zeros(())))
        spare_labels = torch.cat([self.queue_labels,
                                  self.queue_labels.new_full((1, ), -1)])
        spare_labels.index_copy_(0, index, labels)
        self.queue_keys.copy_(spare_keys[:size])
        self.queue_labels.copy_(spare_labels[:size])
        self.queue_ptr.copy_((self.queue_ptr + count) % size)
        self.num_skipped_writes.add_(labels.numel() - count)

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
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, num_classes={self.num_classes}, '
                f'memory_size={self.memory_size}, '
                f'slots_per_class={self.slots_per_class}, '
                f'label_dim={self.label_dim}, heads={self.heads}, '
                f'rma={self.rma}, abd={self.abd}, synthetic={self.synthetic}, '
                f'inference={self.inference!r})')

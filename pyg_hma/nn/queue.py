r"""The FIFO write of HMA's memory, for one queue or S queues at once: the one
definition :meth:`HMAReadout.write <pyg_hma.nn.HMAReadout.write>` and the
seed-batched trainer (one queue per seed) both execute."""
from typing import Sequence, Tuple

import torch
from torch import Tensor


@torch.no_grad()
def write_queue(queue_keys: Tensor, queue_labels: Tensor, queue_ptr: Tensor,
                keys: Tensor, labels: Tensor, valid: Tensor,
                extra: Sequence[Tuple[Tensor, Tensor]] = ()) -> Tensor:
    r"""Writes the valid rows of :obj:`keys` and :obj:`labels` into S FIFO
    queues of :math:`M` slots each, in place, and returns how many rows each
    queue took, ``[S]``.

    Queue :math:`s` writes its valid rows in order from slot
    :math:`p_s` (:obj:`queue_ptr`), wrapping around; with more valid rows
    than slots only the newest :math:`M` are kept; the pointer advances by
    the number written. Invalid rows are skipped (the others keep their
    order). Runs on the device without a host sync: rows that are not kept
    are sent to a spare slot that is dropped.

    Args:
        queue_keys (torch.Tensor): :math:`(S, M, d)`.
        queue_labels (torch.Tensor): :math:`(S, M)`.
        queue_ptr (torch.Tensor): :math:`(S)`.
        keys (torch.Tensor): :math:`(S, B, d)`, in :obj:`queue_keys`' dtype.
        labels (torch.Tensor): :math:`(S, B)`, integer.
        valid (torch.Tensor): :math:`(S, B)`, bool: the rows to write.
        extra: pairs ``(queue [S, M, e], rows [S, B, e])`` written to the same
            slots (the label tokens of the released code's readout).
    """
    S, M = queue_labels.shape
    B = labels.size(1)
    count = valid.sum(dim=1)
    pos = valid.cumsum(dim=1) - 1  # position among the valid rows
    # The newest M valid rows; older ones would be overwritten.
    kept = valid & (pos >= (count - M).unsqueeze(1))
    index = torch.where(kept, (queue_ptr.unsqueeze(1) + pos) % M,
                        torch.full_like(pos, M))
    index = (index + torch.arange(S, device=index.device).view(S, 1)
             * (M + 1)).view(-1)
    pairs = [(queue_keys, keys), (queue_labels.unsqueeze(-1),
                                  labels.unsqueeze(-1)), *extra]
    for queue, rows in pairs:
        width = queue.size(-1)
        spare = torch.cat([queue, queue.new_zeros(S, 1, width)], dim=1)
        spare.view(S * (M + 1), width).index_copy_(
            0, index, rows.reshape(S * B, width).to(queue.dtype))
        queue.copy_(spare[:, :M])
    queue_ptr.copy_((queue_ptr + count) % M)
    return count


__all__ = ['write_queue']

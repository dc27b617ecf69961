"""Loss functions: each returns the loss and its gradient with respect to the logits."""

import numpy as np


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy over the batch, and dL/dlogits.

    For one example with logits z (C,) and label y:

        p = softmax(z) = exp(z - max z) / sum_j exp(z_j - max z)
        loss = -log p[y] = logsumexp(z) - z[y]
        dloss/dz = p - onehot(y)

    The batch loss is the mean over N examples, so dlogits = (p - onehot(y)) / N.
    Subtracting max z first keeps every exp() <= 1: stable for any finite logits.

    logits: (N, C) float array; labels: (N,) integers in [0, C).
    Returns (loss: float, dlogits: (N, C) array of the logits' dtype).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, C), got {logits.shape}")
    n, c = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"softmax_cross_entropy: expected labels of shape ({n},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got dtype {labels.dtype}")
    if n == 0:
        raise ValueError("softmax_cross_entropy: empty batch (N = 0)")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {c}), "
                         f"got values in [{labels.min()}, {labels.max()}]")
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float32)

    ### BEGIN SOLUTION 1.3
    rows = np.arange(n)
    row_max = logits.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):       # z - max z may round to -inf: exp gives 0, as it should
        shifted = logits - row_max
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    # loss_n = log(sum_j exp(z_j - max z)) - (z_y - max z). The N numbers of the second term are
    # formed in float64, because z_y - max z can exceed the float32 range for huge logits.
    label_term = logits[rows, labels].astype(np.float64) - row_max[:, 0].astype(np.float64)
    loss = float(np.mean(np.log(sum_exp).astype(np.float64) - label_term))
    dlogits = exp
    dlogits /= sum_exp[:, None]            # softmax probabilities
    dlogits[rows, labels] -= 1.0
    dlogits /= n
    ### END SOLUTION
    return loss, dlogits

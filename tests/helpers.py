"""What several test files share."""

import torch

from data.tokenizer import get_tokenizer, vocab_size_padded
from model import GPT, GPTConfig, save_checkpoint


def tiny_checkpoint(path=None, scalar=False, seed=0, block_size=256):
    """An untrained 2 x 32 GPT on the world's tokenizer (with a scalar head: a PM), saved to
    path when one is given."""
    torch.manual_seed(seed)
    enc = get_tokenizer("world")
    config = GPTConfig(
        vocab_size=vocab_size_padded(enc),
        vocab_valid=enc.n_vocab,
        block_size=block_size,
        n_layer=2,
        n_head=2,
        n_embd=32,
        scalar_head=scalar,
    )
    m = GPT(config)
    if path:
        save_checkpoint(str(path), m, "world")
    return m

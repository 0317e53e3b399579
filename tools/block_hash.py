#!/usr/bin/env python3
"""Reference implementation of KVCacheEngine's block hash, version 1 (see include/kvcache.h).

For gateways and tools that are not linked against libkvcache: the same chained, seeded
64-bit hashes that kvc_hash_tokens returns and that KV events carry.

    python3 tools/block_hash.py 16 1 2 3 ...   # block_tokens, then tokens: one hash per full block
    python3 tools/block_hash.py --salt 7 16 1 2 3 ...   # the same chain under salt 7
"""
import sys

MASK = (1 << 64) - 1
SEED = 0x6B76636163686531  # "kvcache1"
P1 = 0x9E3779B185EBCA87
P2 = 0xC2B2AE3D27D4EB4F


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    h ^= h >> 33
    return h


def root(salt: int) -> int:
    """Parent of a chain's first block under a salt: 0 for salt 0 (kvc_hash_tokens_salted)."""
    return _fmix64((salt * P1) & MASK)


def block_hash(parent: int, tokens: list[int]) -> int:
    """Hash of one block of tokens under its parent's hash (root(salt) for the first block)."""
    h = parent ^ SEED ^ ((len(tokens) * P1) & MASK)
    for t in tokens:
        x = h ^ (((t & 0xFFFFFFFF) * P2) & MASK)
        h = (((x << 31) | (x >> 33)) & MASK) * P1 & MASK
    v = _fmix64(h)
    return v if v != 0 else SEED  # never 0: 0 is salt 0's root


def chain(tokens: list[int], block_tokens: int, salt: int = 0) -> list[int]:
    """Chained hashes of every full block, under a salt (0: none)."""
    hashes, parent = [], root(salt)
    for i in range(len(tokens) // block_tokens):
        parent = block_hash(parent, tokens[i * block_tokens:(i + 1) * block_tokens])
        hashes.append(parent)
    return hashes


def main() -> None:
    """Prints one hash per full block of the tokens given, a usage error for bad arguments."""
    import argparse

    def integer(text: str) -> int:
        return int(text, 0)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Tokens are 32-bit values (a larger one is masked, as the header says).")
    parser.add_argument("--salt", type=integer, default=0, help="salt of the chain (kvc_hash_tokens_salted); 0: none")
    parser.add_argument("block_tokens", type=integer, help="tokens per block, at least 1")
    parser.add_argument("tokens", type=integer, nargs="*", help="the prompt's tokens")
    args = parser.parse_args()
    if args.block_tokens < 1:
        parser.error(f"block_tokens must be at least 1, not {args.block_tokens}")
    for h in chain(args.tokens, args.block_tokens, args.salt & MASK):
        print(h)


if __name__ == "__main__":
    main()

/* kvm_checksum64: written for this project. 64-byte stripes into four accumulators; each pair
 * of words is keyed by its lane and by the stripe's position, multiplied 64x64->128 and folded
 * (one multiply per 16 bytes, so the multiplier is not the bottleneck), and one raw word is
 * added too so that a word equal to its key still counts. The position key makes the sum
 * depend on where each stripe is: without it the lanes only added up their stripes, so a
 * slot with two stripes (or two 4 KiB sectors) swapped checksummed the same. A
 * MurmurHash3-style finalizer mixes the result. Detects torn, corrupted and reordered data;
 * not cryptographic. Inputs shorter than a stripe (slot headers, journal records) never reach
 * the stripes: their values are those of the format before the position key. */
#include "kvm_slab.h"
#include <string.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull

static const uint64_t keys[8] = {
    0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull,
    0x452821E638D01377ull, 0xBE5466CF34E90C6Cull, 0xC0AC29B7C97C50DDull, 0x3F84D5B5B5470917ull,
};

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint64_t fold(uint64_t a, uint64_t b) {
    __uint128_t m = (__uint128_t)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}
static inline uint64_t fmix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

/* One 64-byte stripe at p, keyed by `position` (a different value for every stripe of an
 * input: see `next`), into the four accumulators; stored at copy as well unless it is NULL
 * (a constant at every call, so the test folds away). */
static inline void stripe(uint64_t acc[4], const uint8_t *p, uint8_t *copy, uint64_t position) {
    for (int i = 0; i < 4; i++) {
        uint64_t a = load64(p + 16 * i), b = load64(p + 16 * i + 8);
        if (copy) {
            memcpy(copy + 16 * i, &a, 8);
            memcpy(copy + 16 * i + 8, &b, 8);
        }
        acc[i] += fold(a ^ keys[2 * i] ^ position, b ^ keys[2 * i + 1]) + rotl(a, 17) + b;
    }
}

/* The position key of the stripe after the one keyed `position`: a Weyl sequence (an odd
 * step), so no two of the first 2^64 stripes share a key. */
static inline uint64_t next(uint64_t position) { return position + P2; }

static inline void start(uint64_t acc[4], uint64_t seed) {
    acc[0] = seed ^ P1;
    acc[1] = seed ^ P2;
    acc[2] = seed ^ P3;
    acc[3] = seed;
}

/* Merges the lanes, takes the n < 64 bytes left at p, and mixes in the total length. */
static uint64_t finish(const uint64_t acc[4], const uint8_t *p, uint64_t n, uint64_t len) {
    uint64_t h = rotl(acc[0], 1) + rotl(acc[1], 7) + rotl(acc[2], 12) + rotl(acc[3], 18) + len * P3;
    while (n >= 8) {
        h = rotl(h ^ fold(load64(p) ^ P2, P1), 27) * P1 + P3;
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        h = rotl(h ^ (*p * P3), 11) * P1;
        p++;
        n--;
    }
    return fmix(h);
}

uint64_t kvm_checksum64(const void *data, uint64_t len, uint64_t seed) {
    const uint8_t *p = data;
    uint64_t acc[4];
    start(acc, seed);
    uint64_t n = len, position = P1;
    for (; n >= 64; n -= 64, p += 64, position = next(position)) stripe(acc, p, NULL, position);
    return finish(acc, p, n, len);
}

uint64_t kvm_copy_checksum64(void *dst, const void *const *sources, uint32_t count, uint64_t run_bytes, uint64_t seed) {
    uint8_t *d = dst;
    if (run_bytes % 64 != 0) {
        for (uint32_t i = 0; i < count; i++) memcpy(d + i * run_bytes, sources[i], run_bytes);
        return kvm_checksum64(dst, count * run_bytes, seed);
    }
    /* Each word is loaded once, checksummed and stored from its register. */
    uint64_t acc[4], position = P1;
    start(acc, seed);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *p = sources[i];
        for (uint64_t n = 0; n < run_bytes; n += 64, p += 64, d += 64, position = next(position)) stripe(acc, p, d, position);
    }
    return finish(acc, d, 0, count * run_bytes);
}

/* kvm_checksum64: four multiply-rotate lanes over 32-byte stripes, then a finalizer. Written
 * for this project; same family of constants as the block hash (golden-ratio primes). */
#include "kvm_slab.h"
#include <string.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint64_t lane(uint64_t acc, uint64_t w) { return rotl(acc + w * P2, 31) * P1; }
static inline uint64_t fmix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

uint64_t kvm_checksum64(const void *data, uint64_t len, uint64_t seed) {
    const uint8_t *p = data;
    uint64_t a = seed + P1 + P2, b = seed + P2, c = seed, d = seed - P1;
    uint64_t n = len;
    while (n >= 32) {
        a = lane(a, load64(p));
        b = lane(b, load64(p + 8));
        c = lane(c, load64(p + 16));
        d = lane(d, load64(p + 24));
        p += 32;
        n -= 32;
    }
    uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18) + len * P3;
    while (n >= 8) {
        h = rotl(h ^ lane(0, load64(p)), 27) * P1 + P3;
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

// The random numbers of Dropout, drawn from (seed, epoch, layer, sample, element) by hashing:
// no generator state, so any thread count, block split or device gives the same bits. The
// same __host__ __device__ functions serve the CPU (ops/dropout.cpp) and the GPU.
#pragma once
#include <cstdint>

#include "base/hd.h"

namespace pylenet {

// SplitMix64's finaliser: a bijection of 64-bit words whose outputs look independent.
PYLENET_HD inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// MurmurHash3's 32-bit finaliser (two multiplies: cheap per element, vectorisable).
PYLENET_HD inline uint32_t mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

// The key of one layer's noise in one epoch of a run seeded `seed` (layer = its index in the
// network).
PYLENET_HD inline uint64_t noise_key(uint64_t seed, uint64_t epoch, uint64_t layer) {
    return mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ epoch) ^ (layer + 1));
}

// The 32-bit word of one sample (its index in the epoch) under a layer's key.
PYLENET_HD inline uint32_t sample_key(uint64_t key, uint64_t sample) {
    return uint32_t(mix64(key ^ (sample * 0xd6e8feb86659fd93ULL)) >> 32);
}

// Dropout's rule for element e of a sample: kept unless the hash's top 24 bits fall below
// `threshold` = round(p * 2^24) (p = the drop probability).
PYLENET_HD inline bool keep_element(uint32_t sample_word, uint32_t e, uint32_t threshold) {
    return (mix32(sample_word ^ (e * 0x9e3779b9u)) >> 8) >= threshold;
}

// The threshold of drop probability p in [0, 1].
inline uint32_t drop_threshold(double p) { return uint32_t(p * 16777216.0 + 0.5); }

}  // namespace pylenet

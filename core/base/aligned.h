// Buffers whose data starts on a 64-byte boundary (a cache line, a full AVX-512 register), so
// that kernels reading whole rows of them never split a load across two cache lines.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace pylenet {

template <class T>
struct CacheAligned {
    using value_type = T;
    static constexpr std::align_val_t kAlign{64};
    CacheAligned() = default;
    template <class U>
    CacheAligned(const CacheAligned<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
    void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
    template <class U>
    bool operator==(const CacheAligned<U>&) const { return true; }
    template <class U>
    bool operator!=(const CacheAligned<U>&) const { return false; }
};

// A float vector whose data is 64-byte aligned.
using AlignedFloats = std::vector<float, CacheAligned<float>>;

}  // namespace pylenet

// Batch preparation in one pass over the output (the numpy version took three).
#include "ops/preprocess.h"

#include "base/parallel.h"

namespace pylenet {

void check_gather_pad_normalize(const Shape& images, int64_t pad, int64_t lut_size,
                                const Shape* idx_shape, const int64_t* idx, const char* op) {
    check_ndim(op, "images", images, 3, "(N, H, W)");
    check_at_least(op, "pad", pad, 0);
    if (lut_size != 256)
        throw std::invalid_argument(std::string(op) + ": lut must hold 256 floats, got " +
                                    std::to_string(lut_size));
    if (idx_shape) {
        check_ndim(op, "idx", *idx_shape, 1, "(n,)");
        check_indices(op, "idx", idx, (*idx_shape)[0], images[0]);
    }
}

void gather_pad_normalize(float* out, const uint8_t* images, const int64_t* idx, int64_t n,
                          int64_t H, int64_t W, int64_t pad, const float* lut) {
    const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    const float bg = lut[0];
    parallel_for(n, threads_for(n * Hp * Wp * 4), [&](int64_t i) {
        const uint8_t* img = images + (idx ? idx[i] : i) * H * W;
        float* o = out + i * Hp * Wp;
        for (int64_t h = 0; h < Hp; h++) {
            float* row = o + h * Wp;
            const int64_t ih = h - pad;
            if (ih < 0 || ih >= H) {
                for (int64_t w = 0; w < Wp; w++) row[w] = bg;
                continue;
            }
            for (int64_t w = 0; w < pad; w++) row[w] = bg;
            const uint8_t* src = img + ih * W;
            for (int64_t w = 0; w < W; w++) row[pad + w] = lut[src[w]];
            for (int64_t w = pad + W; w < Wp; w++) row[w] = bg;
        }
    });
}

}  // namespace pylenet

// Message-building helpers for the per-op shape checks.
#include "base/checks.h"

#include <sstream>

namespace pylenet {

std::string shape_str(const Shape& s) {
    std::ostringstream out;
    out << "(";
    for (size_t i = 0; i < s.size(); i++) out << (i ? ", " : "") << s[i];
    out << (s.size() == 1 ? ",)" : ")");
    return out.str();
}

std::string num_str(double v) {
    std::ostringstream out;
    out << v;
    return out.str();
}

void check_ndim(const char* op, const char* arg, const Shape& s, size_t ndim, const char* layout) {
    if (s.size() != ndim)
        throw std::invalid_argument(std::string(op) + ": " + arg + " must be " +
                                    std::to_string(ndim) + "-D " + layout + ", got shape " +
                                    shape_str(s));
}

void check_at_least(const char* op, const char* arg, int64_t value, int64_t lo) {
    if (value < lo)
        throw std::invalid_argument(std::string(op) + ": " + arg + " must be >= " +
                                    std::to_string(lo) + ", got " + std::to_string(value));
}

void check_equal(const char* op, const char* what_a, int64_t a, const char* what_b, int64_t b) {
    if (a != b)
        throw std::invalid_argument(std::string(op) + ": " + what_a + " (" + std::to_string(a) +
                                    ") does not match " + what_b + " (" + std::to_string(b) + ")");
}

void check_same_shape(const char* op, const char* arg_a, const Shape& a, const char* arg_b,
                      const Shape& b) {
    if (a != b)
        throw std::invalid_argument(std::string(op) + ": " + arg_a + " has shape " + shape_str(a) +
                                    " but " + arg_b + " has shape " + shape_str(b) +
                                    "; they must be equal");
}

void check_output_size(const char* op, double elements) {
    // Counted in double so that huge paddings cannot overflow the product first. 2^31 floats
    // (8 GiB) in one output is beyond any LeNet-sized use; refusing it up front beats an
    // allocation that the kernel's overcommit grants and the first touch turns into an OOM.
    if (elements > 2147483648.0) {
        std::ostringstream msg;
        msg << op << ": an array of " << elements
            << " float32 elements (more than 8 GiB) is refused; use smaller shapes or split "
               "the batch";
        throw std::invalid_argument(msg.str());
    }
}

void check_shape_arg(const char* op, const char* arg, const Shape& s, size_t ndim, const char* layout) {
    if (s.size() != ndim)
        throw std::invalid_argument(std::string(op) + ": " + arg + " must have " + std::to_string(ndim) +
                                    " entries " + layout + ", got " + shape_str(s));
    for (int64_t d : s)
        if (d < 0)
            throw std::invalid_argument(std::string(op) + ": " + arg + " entries must be >= 0, got " +
                                        shape_str(s));
    // One sample's size first: with N = 0 the total is 0 however large the rest is, and the
    // strides of the result must still fit int64.
    double sample = 1.0;
    for (size_t i = 1; i < s.size(); i++) sample *= double(s[i]);
    check_output_size(op, sample);
    check_output_size(op, sample * double(s.empty() ? 1 : s[0]));
}

void check_indices(const char* op, const char* arg, const int64_t* v, int64_t n, int64_t hi,
                   const std::string& context) {
    for (int64_t i = 0; i < n; i++)
        if (v[i] < 0 || v[i] >= hi)
            throw std::invalid_argument(std::string(op) + ": " + arg + "[" + std::to_string(i) +
                                        "] = " + std::to_string(v[i]) + " is outside [0, " +
                                        std::to_string(hi) + ")" + context);
}

int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

}  // namespace pylenet

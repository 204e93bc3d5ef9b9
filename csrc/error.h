// Errors raised by the core. Thrown only on our side of the ggml seam (never through ggml
// callbacks); bindings.cpp maps them to Python exceptions.
#pragma once
#include <stdexcept>
#include <string>

namespace lanner {

// A model file that cannot be used: truncated, corrupt, unsupported. Message names the file.
struct ModelLoadError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The KV cache has no room for a batch (nothing of the batch was applied).
struct KvCacheFullError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A batch's graph could not be allocated or computed. Cells placed by earlier ubatches of the
// same batch stay occupied: the caller removes the step's positions (seq_rm) and carries on.
struct DecodeError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace lanner

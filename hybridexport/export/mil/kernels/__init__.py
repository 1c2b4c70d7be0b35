"""MIL op kernels, one module per op family; importing this package registers them all."""

from hybridexport.export.mil.kernels import (  # noqa: F401
    activation,
    constexpr,
    conv,
    elementwise,
    linalg,
    normalization,
    reduction,
    resize,
    tensor,
)

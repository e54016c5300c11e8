"""MIL op implementations, one topic module each; importing this package registers them all."""

from . import (  # noqa: F401
    activation,
    constexpr,
    control,
    conv,
    elementwise,
    image,
    indexing,
    linear,
    norm,
    pool,
    recurrent,
    reduction,
    shape,
    tensor,
)

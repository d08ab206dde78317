"""Fast optimizer steps: one pass over memory through a native CPU kernel.

:func:`fused_apply` is the entry point (also exported as ``gradtx.fused_apply``);
:func:`native_kernel_available` says whether the kernel could be built here.
"""

from gradtx.fused import build
from gradtx.fused.apply import fused_apply


def native_kernel_available() -> bool:
    """Whether the native CPU kernel is built, registered and not disabled.

    Builds it on the first call (a few seconds, once per machine; the library
    is cached in ``~/.cache/gradtx`` or ``$GRADTX_CACHE_DIR``).

    Returns:
      False when ``GRADTX_DISABLE_NATIVE`` is set or the build failed (no C++
      compiler, say); :func:`fused_apply` then runs the plain XLA step.
    """
    return build.load()


__all__ = ["fused_apply", "native_kernel_available"]

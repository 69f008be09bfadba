"""onnxruntime sessions for the fast engines: execution providers, threads, and the CPU fallback.

A provider is asked for by name (``CUDAExecutionProvider``, or ``cuda`` for short); one that this
onnxruntime build does not have (the ``onnxruntime`` wheel has no CUDA, ``onnxruntime-gpu`` does)
is dropped with one warning, and the CPU provider is always last so every session can run.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
_SHORT_NAMES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
_warned: set[tuple[str, ...]] = set()


def provider_name(name: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; full names pass through."""
    name = name.strip()
    return _SHORT_NAMES.get(name.lower(), name)


def resolve_providers(requested: Iterable[str], available: Sequence[str] | None = None) -> list[str]:
    """The requested providers this onnxruntime has, in order, then the CPU provider.

    Missing ones are reported once per process (a warning and a log line), not per session.
    """
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    wanted = [provider_name(p) for p in requested if p.strip()]
    chosen = [p for p in dict.fromkeys(wanted) if p in available and p != CPU]
    missing = tuple(p for p in dict.fromkeys(wanted) if p not in available)
    if missing and missing not in _warned:
        _warned.add(missing)
        message = (
            f"onnxruntime has no {', '.join(missing)} (available: {', '.join(available)}); "
            "running on the CPU. For CUDA install onnxruntime-gpu instead of onnxruntime."
        )
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return [*chosen, CPU]


def make_session(model: bytes, threads: int = 1, providers: Sequence[str] = (CPU,)):
    """An InferenceSession on ``providers`` (resolved as above) with ``threads`` intra-op threads.

    One thread suits one worker process per core; inter-op parallelism is off (these graphs are
    one chain of layers).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=opts, providers=resolve_providers(providers))

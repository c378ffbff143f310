"""Inference backends: an onnxruntime session or a PyTorch module, on the CPU or a CUDA GPU.

A backend maps a batch of normalised slices ``(N, 1, H, W)`` float32 to softmax probabilities
``(N, C, H, W)`` float32 (numpy in, numpy out) and says what it runs on (:attr:`Backend.name`,
:attr:`Backend.device`). Backends that can also give the embedding ``z`` ``(N, D)`` of the same
pass (a PyTorch :class:`~pedseg.models.segmenter.DomainSegmenter`, an export with an ``embedding``
output) have ``segment_and_embed`` (:func:`embedding_call` finds it): the domain check then costs
no second network call.

Device rules: ``cpu`` never touches CUDA. ``cuda`` (or ``cuda:N``) must get a working GPU provider,
else :class:`DeviceError` unless ``allow_cpu_fallback`` (then the CPU, with a warning). ``auto`` uses
a GPU when one is present and silently settles for the CPU otherwise; on a machine without a GPU
(``torch.cuda.is_available()`` false and neither ``nvidia-smi`` nor ``libcuda`` found) it does not
even try CUDA, so onnxruntime-gpu prints no spurious provider errors.

onnxruntime-gpu lists ``CUDAExecutionProvider`` even where it cannot load, and then quietly falls back:
the providers of the created session (``session.get_providers()``) are what counts.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pedseg.errors import ConfigError, DeviceError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "DEVICES_HELP",
    "NUM_THREADS_ENV",
    "Backend",
    "OnnxBackend",
    "TorchBackend",
    "embedding_call",
    "gpu_present",
    "num_threads",
    "parse_device",
]

logger = logging.getLogger(__name__)

BACKENDS = ("onnx", "onnx-int8", "torch")
NUM_THREADS_ENV = "PEDSEG_NUM_THREADS"
DEVICES_HELP = "auto | cpu | cuda | cuda:N"
EMBEDDING_OUTPUT = "embedding"  # pedseg.export.onnx.EMBEDDING_NAME, without importing onnx
_ORT_ERROR = 3  # onnxruntime log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_ORT_FATAL = 4


class Backend(Protocol):
    """Something that turns normalised slices into probabilities."""

    @property
    def name(self) -> str: ...  # "onnx", "onnx-int8" or "torch"

    @property
    def device(self) -> str: ...  # "cpu" or "cuda[:N]"

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DeviceRequest:
    """A parsed ``--device``: ``kind`` auto/cpu/cuda and the GPU index for cuda."""

    kind: str
    index: int = 0

    @property
    def label(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" and self.index else self.kind


def parse_device(text: str) -> DeviceRequest:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is a ConfigError."""
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda"):
        return DeviceRequest(value)
    if value.startswith("cuda:") and value[5:].isdigit():
        return DeviceRequest("cuda", int(value[5:]))
    raise ConfigError(f"--device must be {DEVICES_HELP}, got {text!r}")


@lru_cache(maxsize=1)
def gpu_present() -> bool:
    """Whether this machine may have an NVIDIA GPU: a driver is installed (``nvidia-smi`` or
    ``libcuda``), or torch, when this process has already imported it, sees one. Torch is not
    imported for the question: it needs the same driver, and costs seconds to import."""
    if shutil.which("nvidia-smi") is not None or ctypes.util.find_library("cuda") is not None:
        return True
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def _physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads counted once)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return max(1, usable)
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip() and core:
            cores.add((physical, core))
            physical = core = ""
    return max(1, min(usable, len(cores) or usable))


def num_threads() -> int:
    """Intra-op threads: ``$PEDSEG_NUM_THREADS`` or the number of physical cores."""
    raw = os.environ.get(NUM_THREADS_ENV, "").strip()
    if not raw:
        return _physical_cores()
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{NUM_THREADS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def _cpu_fallback(what: str, *, allow: bool) -> None:
    if not allow:
        raise DeviceError(
            f"--device cuda: {what}; use --device cpu, or --allow-cpu-fallback to run on the CPU"
        )
    logger.warning("--device cuda: %s; running on the CPU (--allow-cpu-fallback)", what)


# ---------------------------------------------------------------------------------------- onnx
def _preload_cuda_libraries(ort: Any) -> None:
    """Let the CUDA/cuDNN libraries that come with PyTorch's wheels serve onnxruntime-gpu."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as error:  # best effort: the session reports what is really missing
        logger.info("onnxruntime.preload_dlls() failed: %s", error)


class OnnxBackend:
    """An onnxruntime session over one exported domain (``image`` -> ``probabilities``)."""

    name = "onnx"

    def __init__(
        self,
        model: Path | bytes,
        *,
        device: str = "auto",
        allow_cpu_fallback: bool = False,
        threads: int | None = None,
        where: Path | None = None,
        name: str = "onnx",
    ) -> None:
        """``model`` is a file or the serialised model (checked for external data beforehand);
        ``where`` names it in messages; ``name`` is what predict prints (``onnx-int8``)."""
        import onnxruntime as ort

        self.name = name
        request = parse_device(device)
        path = where if where is not None else model if isinstance(model, Path) else "<onnx>"
        self.path = path
        self._ort = ort
        use_cuda = self._want_cuda(request, allow_cpu_fallback=allow_cpu_fallback)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads if threads is not None else num_threads()
        options.log_severity_level = _ORT_FATAL if request.kind == "auto" else _ORT_ERROR
        providers: list[Any] = ["CPUExecutionProvider"]
        if use_cuda:
            _preload_cuda_libraries(ort)
            providers = [
                ("CUDAExecutionProvider", {"device_id": request.index}),
                "CPUExecutionProvider",
            ]
        ort.set_default_logger_severity(_ORT_FATAL if request.kind == "auto" else _ORT_ERROR)
        try:
            source = str(model) if isinstance(model, Path) else model
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"{path}: cannot be loaded by onnxruntime ({error})") from None
        finally:
            ort.set_default_logger_severity(_ORT_ERROR)
        self.device = "cpu"
        if use_cuda:
            if self.session.get_providers()[0] == "CUDAExecutionProvider":
                self.device = request.label
            elif request.kind == "cuda":
                _cpu_fallback(
                    "onnxruntime could not load its CUDA provider (CUDA/cuDNN libraries)",
                    allow=allow_cpu_fallback,
                )
            else:
                logger.info("onnxruntime could not load its CUDA provider; using the CPU")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [o.name for o in outputs]
        two = len(outputs) == 2 and names[1] == EMBEDDING_OUTPUT
        if len(inputs) != 1 or not (len(outputs) == 1 or two):
            raise ModelError(
                f"{path}: expected one input and one output (or probabilities and embedding), "
                f"got {len(inputs)} and {len(outputs)}; re-export it"
            )
        self._input = inputs[0].name
        self._output = outputs[0].name
        self.embeds = two
        """Whether the graph also outputs the embedding (exports since pedseg 0.1, not int8)."""
        self._dtype = np.float16 if "float16" in inputs[0].type else np.float32

    def _want_cuda(self, request: DeviceRequest, *, allow_cpu_fallback: bool) -> bool:
        if request.kind == "cpu":
            return False
        available = "CUDAExecutionProvider" in self._ort.get_available_providers()
        if request.kind == "auto":
            return available and gpu_present()
        if not available:
            _cpu_fallback(
                "this onnxruntime has no CUDA provider (install onnxruntime-gpu)",
                allow=allow_cpu_fallback,
            )
            return False
        if not gpu_present():
            _cpu_fallback("no NVIDIA GPU found on this machine", allow=allow_cpu_fallback)
            return False
        return True

    @property
    def fp16(self) -> bool:
        return self._dtype == np.float16

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, [self._output])[0]

    def segment_and_embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings of one pass; only for a graph that :attr:`embeds`."""
        if not self.embeds:
            raise ModelError(f"{self.path}: this graph has no embedding output; re-export it")
        probabilities, embedding = self._run(images, [self._output, EMBEDDING_OUTPUT])
        return probabilities, embedding

    def _run(self, images: np.ndarray, names: list[str]) -> list[np.ndarray]:
        feed = np.ascontiguousarray(images, dtype=self._dtype)
        if self.device == "cpu":
            outs = self.session.run(names, {self._input: feed})
        else:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self._input, feed)
            for name in names:
                binding.bind_output(name, "cuda", device_id=parse_device(self.device).index)
            self.session.run_with_iobinding(binding)
            outs = binding.copy_outputs_to_cpu()
        return [np.asarray(out, dtype=np.float32) for out in outs]


# --------------------------------------------------------------------------------------- torch
class TorchBackend:
    """A PyTorch module (eval mode, softmax output) on the CPU or a GPU, channels_last by default
    (about 20 % faster than NCHW on a CPU). The module itself is moved (device, memory format)."""

    name = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        device: str = "auto",
        allow_cpu_fallback: bool = False,
        channels_last: bool = True,
        threads: int | None = None,
    ) -> None:
        import torch

        request = parse_device(device)
        target = "cpu"
        if request.kind == "auto" and torch.cuda.is_available():
            target = "cuda"
        elif request.kind == "cuda":
            if not torch.cuda.is_available():
                _cpu_fallback(
                    "PyTorch sees no CUDA GPU (CPU-only build or no driver)",
                    allow=allow_cpu_fallback,
                )
            elif request.index >= torch.cuda.device_count():
                raise DeviceError(
                    f"--device {request.label}: only {torch.cuda.device_count()} GPU(s) visible"
                )
            else:
                target = request.label
        if target == "cpu":
            torch.set_num_threads(threads if threads is not None else num_threads())
        self.device = target
        self._torch = torch
        self._device = torch.device(target)
        self._format = torch.channels_last if channels_last else torch.contiguous_format
        module = module.eval().to(self._device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.module = module

    @property
    def embeds(self) -> bool:
        """Whether the module gives the embedding of its pass (a ``DomainSegmenter``)."""
        return callable(getattr(self.module, "segment_and_embed", None))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(self._tensor(images))
        return np.ascontiguousarray(out.float().cpu().numpy())

    def segment_and_embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings of one pass; only for a module that :attr:`embeds`."""
        torch = self._torch
        if not self.embeds:
            raise ModelError(f"a {type(self.module).__name__} gives no embedding")
        with torch.inference_mode():
            both: Any = self.module.segment_and_embed
            probabilities, embedding = both(self._tensor(images))
        return (
            np.ascontiguousarray(probabilities.float().cpu().numpy()),
            np.ascontiguousarray(embedding.float().cpu().numpy()),
        )

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        x = self._torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return x.to(self._device).contiguous(memory_format=self._format)


EmbeddingCall = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def embedding_call(backend: object) -> EmbeddingCall | None:
    """``backend.segment_and_embed`` when the backend gives the embedding of its pass, else None."""
    if not getattr(backend, "embeds", False):
        return None
    call = getattr(backend, "segment_and_embed", None)
    return call if callable(call) else None


def run_batches(
    backend: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    *,
    batch_size: int,
    sink: Callable[[int, np.ndarray], None],
) -> None:
    """Feed ``images`` (S, H, W) to ``backend`` ``batch_size`` slices at a time.

    ``sink(start, probs)`` receives each batch's probabilities (b, C, H, W) with the index of its
    first slice, so callers can consume results batch by batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    for start in range(0, int(images.shape[0]), batch_size):
        chunk = images[start : start + batch_size, None]
        probs = backend(chunk)
        if (
            probs.ndim != 4
            or probs.shape[0] != chunk.shape[0]
            or probs.shape[2:] != chunk.shape[2:]
        ):
            raise ModelError(
                f"the model returned shape {tuple(probs.shape)} for input {tuple(chunk.shape)}; "
                "expected (N, classes, H, W)"
            )
        sink(start, probs)

"""Which device the Keras backend computes on, and its name, on any backend."""

from __future__ import annotations

import platform
import shutil
import subprocess

import keras


def accelerator() -> str:
    """``"GPU"`` when the Keras backend sees a GPU, else ``"CPU"``."""
    if keras.backend.backend() == "torch":  # Keras has no distribution API on PyTorch
        import torch

        return "GPU" if torch.cuda.is_available() else "CPU"
    devices = keras.distribution.list_devices()
    return "GPU" if any(device.lower().startswith(("gpu", "cuda")) for device in devices) else "CPU"


def device_name() -> str:
    """The GPU's name (e.g. ``NVIDIA H100 80GB HBM3``) when the backend sees one, else the CPU's."""
    if accelerator() == "GPU":
        return _gpu_name() or "GPU (name unknown)"
    return _cpu_name()


def _gpu_name() -> str | None:
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            return str(torch.cuda.get_device_name(0))
        if backend == "jax":
            import jax

            return str(jax.devices()[0].device_kind)
        if backend == "tensorflow":
            import tensorflow as tf

            details = tf.config.experimental.get_device_details(
                tf.config.list_physical_devices("GPU")[0]
            )
            return str(details["device_name"])
    except (ImportError, RuntimeError, IndexError, KeyError):
        pass
    return _nvidia_smi_name()


def _nvidia_smi_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        result = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.splitlines()[0].strip() if result.stdout.strip() else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"

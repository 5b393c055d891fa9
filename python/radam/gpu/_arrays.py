"""Float32 arrays kept in GPU buffers on the process-wide device."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._device import _FLOAT32, GpuError, _get_context


class DeviceArray:
    """A float32 array kept in a GPU buffer on :func:`device`.

    Pass it as a grad to a ``device="gpu"`` optimizer: it is copied on the GPU,
    with no host round trip. ``buffer`` is the ``wgpu.GPUBuffer`` (usable in your
    own shaders), ``offset`` the byte offset of the array in it.
    """

    __slots__ = ("buffer", "offset", "shape")

    def __init__(self, buffer: Any, shape: tuple[int, ...], offset: int = 0) -> None:
        self.buffer = buffer
        self.shape = tuple(int(s) for s in shape)
        self.offset = int(offset)
        if self.offset % 4 or self.offset + self.nbytes > buffer.size:
            raise ValueError(
                f"a DeviceArray of shape {self.shape} at offset {self.offset} does not fit "
                f"in a buffer of {buffer.size} bytes"
            )

    @classmethod
    def from_numpy(cls, array: Any) -> DeviceArray:
        """Upload a float32 array (any shape; copied, so later host writes do not show)."""
        array = np.asarray(array)
        if array.dtype != _FLOAT32:
            raise TypeError(f"a DeviceArray holds float32, got dtype {array.dtype}")
        ctx = _get_context()
        usage = ctx.wgpu.BufferUsage
        data = np.ascontiguousarray(array).reshape(-1)
        if data.size == 0:
            data = np.zeros(1, _FLOAT32)  # a buffer needs at least one word
        try:
            buffer = ctx.device.create_buffer_with_data(
                label="radam DeviceArray",
                data=data,
                usage=usage.STORAGE | usage.COPY_SRC | usage.COPY_DST,
            )
        except ctx.wgpu.GPUError as err:
            raise GpuError(f"could not allocate a {data.nbytes}-byte GPU buffer: {err}") from err
        return cls(buffer, array.shape)

    @property
    def dtype(self) -> np.dtype:
        return _FLOAT32

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return 4 * self.size

    def numpy(self) -> np.ndarray:
        """A new NumPy array with the buffer's current contents."""
        if self.size == 0:
            return np.zeros(self.shape, _FLOAT32)
        queue = self.buffer._device.queue
        data = queue.read_buffer(self.buffer, self.offset, self.nbytes)
        return np.frombuffer(data, _FLOAT32).reshape(self.shape).copy()

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype=float32, offset={self.offset})"


def asarray(array: Any) -> DeviceArray:
    """``array`` as a :class:`DeviceArray` (returned as is when it already is one)."""
    return array if isinstance(array, DeviceArray) else DeviceArray.from_numpy(array)

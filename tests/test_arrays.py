"""Aligned host arrays: what lets training use the loaded dataset without a copy."""
import jax
import numpy as np
import pytest

from jaxnet import kernels
from jaxnet.arrays import ALIGNMENT, aligned_array, aligned_empty, is_aligned
from jaxnet.data import get_CIFAR10_data


@pytest.mark.parametrize("shape,dtype", [((7, 3), np.float32), ((5, 32, 32, 3), np.uint8),
                                         ((3,), np.float64)])
def test_aligned_empty_has_the_shape_dtype_and_alignment(shape, dtype):
    a = aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.ctypes.data % ALIGNMENT == 0 and a.flags.writeable


def test_aligned_array_returns_aligned_input_itself_and_copies_the_rest():
    a = aligned_empty((6, 4), np.float32)
    a[:] = np.arange(24).reshape(6, 4)
    assert aligned_array(a, np.float32) is a
    shifted = a.ravel()[1:21].reshape(5, 4)       # 4 bytes past the boundary
    assert not is_aligned(shifted)
    copy = aligned_array(shifted, np.float32)
    assert is_aligned(copy) and copy is not shifted
    np.testing.assert_array_equal(copy, shifted)
    as64 = aligned_array(a, np.float64)
    assert as64.dtype == np.float64 and is_aligned(as64)
    np.testing.assert_array_equal(as64, a)
    transposed = aligned_array(a.T, np.float32)
    assert is_aligned(transposed) and transposed.shape == (4, 6)
    np.testing.assert_array_equal(transposed, a.T)


def test_loaded_splits_are_aligned_and_training_uses_them_in_place(cifar_fixture):
    data = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=40)
    for name in ("X_train", "X_val", "X_test"):
        assert is_aligned(data[name]), name
    on_device = kernels.device_array(data["X_train"], np.float32, jax.devices("cpu")[0])
    assert on_device.unsafe_buffer_pointer() == data["X_train"].ctypes.data
    unaligned = aligned_empty((150 * 3072 + 1,), np.float32)[1:].reshape(150, 3072)
    unaligned[:] = data["X_train"]
    assert not is_aligned(unaligned)
    copied = kernels.device_array(unaligned, np.float32, jax.devices("cpu")[0])
    assert copied.unsafe_buffer_pointer() != unaligned.ctypes.data
    np.testing.assert_array_equal(np.asarray(copied), unaligned)

"""`overparam.resources`: memory asked of a device before it is allocated."""

import pytest

from overparam import data, resources
from overparam.kernels.comparison import compare_kernels
from overparam.kernels.nested import width_profile


def test_available_cpu_memory_is_the_kernels_memavailable():
    with open("/proc/meminfo") as info:
        fields = dict(line.split(":", 1) for line in info)
    reported = int(fields["MemAvailable"].split()[0]) * 1024
    assert abs(resources.available("cpu") - reported) <= 256 << 20  # other processes move it between the reads


@pytest.mark.parametrize("size, text", [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1 KiB"), (1536, "1.5 KiB"),
                                        (3 * 2**30, "3 GiB"), (int(1.49 * 2**40), "1.49 TiB"), (2**60, "1.02e+03 PiB")])
def test_size_text_in_binary_units(size, text):
    assert resources.size_text(size) == text


def test_require_says_needed_available_and_what_to_change(monkeypatch):
    monkeypatch.setattr(resources, "available", lambda device: 3 * 2**30)
    resources.require(3 * 2**30, "cpu", "x", "y")  # exactly what there is: fine
    with pytest.raises(MemoryError) as error:
        resources.require(3 * 2**30 + 1, "cpu", "the dense 10 x 10 kernels", "use a smaller --n")
    assert isinstance(error.value, resources.InsufficientMemory)
    assert str(error.value) == ("not enough memory for the dense 10 x 10 kernels: 3.000000001 GiB needed, "
                                "3 GiB available on the CPU; use a smaller --n")  # as many digits as tell them apart
    assert (error.value.needed, error.value.available) == (3 * 2**30 + 1, 3 * 2**30)
    assert "14.93 GiB needed, 14.88 GiB available" in str(resources.InsufficientMemory(
        "x", int(14.93 * 2**30), int(14.88 * 2**30), "CPU", "y"))


def test_sizes_are_the_shapes_they_describe():
    # n (d + 3k) inputs, targets, outputs, residuals + n 2 (k + 2) one chunk + 4 m (d + k) weights, gradient, W(0)
    assert resources.network_bytes(10, 3, 2, 6, 4) == 4 * (10 * (3 + 6) + 10 * 2 * 4 + 4 * 6 * 5)
    assert resources.network_bytes(10, 3, 2, 6, 4, seeds=5) == 5 * resources.network_bytes(10, 3, 2, 6, 4)
    assert resources.dense_kernel_bytes(100, copies=3) == 3 * 100 * 100 * 8


def test_library_entry_points_refuse_before_allocating(monkeypatch):
    monkeypatch.setattr(resources, "available", lambda device: 1 << 20)  # 1 MiB
    with pytest.raises(resources.InsufficientMemory, match=r"the sphere data \(n = 100000, d = 3\)"):
        data.builtin("sphere", 100_000, 3)
    X = data.sphere(300, 3).X  # 300 x 300 float64 kernels: 720 KiB each
    with pytest.raises(resources.InsufficientMemory, match="dense 300 x 300 kernels.*--dense-limit below n k = 300"):
        compare_kernels("relu", X, width=8)
    with pytest.raises(resources.InsufficientMemory, match="kernels of the width grid"):
        width_profile(X, "relu", [4, 8])
    compare_kernels("relu", X[:20], width=8)  # small enough: runs

"""TL Studio's benchmarks: scripts that measure how close the engine runs to its limits.

``python -m bench`` runs the CPU suite; ``python bench/gpu.py`` the GPU figure.
Nothing here is imported by the package or the tests.
"""

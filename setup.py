"""metricslam: metric monocular SLAM from one ordinary camera (Metric3D depth priors + dense bundle adjustment)."""
from setuptools import find_packages, setup

setup(
    name="metricslam",
    version="0.1.0",
    description="Metric 3D reconstruction from a single camera: Metric3D depth priors in DROID-style dense BA, CPU first.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # package_dir maps the root explicitly, so an editable install puts the repository folder on sys.path: the
    # real package then wins over a same-named folder in the working directory (a namespace package).
    package_dir={"": "."},
    # assets is a data folder, listed as a package so that setuptools installs it without warnings.
    packages=[*find_packages(include=["metricslam", "metricslam.*"]), "metricslam.assets"],
    package_data={"metricslam": ["py.typed"], "metricslam.assets": ["*.yaml", "presets/*.yaml"]},
    install_requires=[
        # torch is pinned by the Makefile where it is missing (a bare requirement may pull a CUDA build).
        "torch>=2.1",
        "numpy>=1.24",
        "numexpr>=2.8",  # fused multi-threaded array expressions (synthetic renderer)
        "scipy>=1.10",
        "opencv-python-headless>=4.8",
        "open3d>=0.18",
        "evo>=1.25",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=10.0",
    ],
    extras_require={
        # psutil: evaluation/bench_slam.py memory; ruff and mypy: `make lint` (settings in pyproject.toml)
        "dev": ["pytest>=7.4", "pytest-timeout>=2.1", "psutil>=5.9", "ruff>=0.6", "mypy>=1.11"],
        "train": ["tensorboard>=2.14"],
        "viz": ["rerun-sdk>=0.23"],  # RecordingStream.set_time(timeline, sequence=...) API
        "fast": ["openvino>=2024.4"],  # Metric3D forward on CPUs, about 3x torch (metricslam.depth.openvino_backend)
    },
    entry_points={"console_scripts": ["metricslam=metricslam.cli:main"]},
)

from setuptools import setup, find_packages

setup(
    name="capture",
    version="0.1.0",
    description="Multiprocess shared-memory ring-buffer engine that records exchange market data",
    python_requires=">=3.11",
    packages=find_packages(include=["capture", "capture.*", "ring", "ring.*", "flusher", "flusher.*"]),
    package_data={"ring": ["*.pyi", "py.typed"], "capture": ["*.toml"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["ring/_build.py:ffibuilder"],
    install_requires=[
        "cffi>=1.15",
        "numpy>=1.26",
        "websockets>=13",
        "orjson>=3.9",
        "nats-py>=2.6",
        "psutil>=5.9",
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4", "hypothesis>=6.100"],
    },
    entry_points={"console_scripts": ["capture=capture.cli:main"]},
)

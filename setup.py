import glob
import os
import sys

from setuptools import Extension, find_packages, setup


def fastpath_extensions() -> list:
    """The receiver's compiled picows listener (capture/receiver/_fastpath.pyx).

    It is built against the installed picows (it subclasses picows's
    WSListener at C level), so it needs Cython and picows at build time.
    Without them the package still installs and the receiver uses its Python
    listener (same behaviour, slower); this says so here, and the receiver
    logs it at start.
    """
    try:
        import picows
        from Cython.Build import cythonize
    except ImportError as exc:
        print(f"capture: not building the compiled receiver path ({exc}); "
              "the Python listener will be used", file=sys.stderr)
        return []
    ext = Extension("capture.receiver._fastpath", ["capture/receiver/_fastpath.pyx"],
                    include_dirs=[os.path.dirname(picows.__file__)])
    return cythonize([ext], quiet=True)


setup(
    name="capture",
    version="0.1.0",
    description="Multiprocess shared-memory ring-buffer engine that records exchange market data",
    python_requires=">=3.11",
    packages=find_packages(include=["common", "common.*", "capture", "capture.*", "ring", "ring.*", "flusher", "flusher.*"]),
    package_data={"ring": ["*.pyi", "py.typed"], "capture": ["*.toml"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["ring/_build.py:ffibuilder"],
    ext_modules=fastpath_extensions(),
    # `capture systemd install` copies these from <prefix>/share/capture/systemd.
    data_files=[("share/capture/systemd", sorted(glob.glob("systemd/*.service") + glob.glob("systemd/*.target")
                                                 + glob.glob("systemd/*.conf"))),
                ("share/capture/systemd/capture@.service.d", glob.glob("systemd/capture@.service.d/*"))],
    install_requires=[
        "cffi>=1.15",
        "numpy>=1.26",
        "websockets>=13",
        "orjson>=3.9",
        "nats-py>=2.6",
        "psutil>=5.9",
        "prometheus-client>=0.20",
        "picows>=1.0",
        "zstandard>=0.22",
        "cryptography>=42",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4", "hypothesis>=6.100"],
        "export": ["pyarrow>=15"],
    },
    entry_points={"console_scripts": ["capture=capture.cli:main"]},
)

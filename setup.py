"""ptjax: prompt tuning (Lester et al., 2021) on a frozen, T5X-compatible T5 in JAX/Flax."""

import setuptools

setuptools.setup(
    name="ptjax",
    version="0.1.0",
    description="Parameter-efficient prompt tuning of frozen T5 1.1 models in JAX/Flax, T5X-compatible.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["ptjax", "ptjax.*"]),
    package_data={"ptjax": ["gin/*.gin", "gin/*/*.gin", "assets/mini_world/*", "assets/paper/*", "assets/mini_t5_1_1_large/*",
                             "assets/mini_t5_1_1_large/*/*",
                             "assets/mini_t5_1_1_large/*/.zarray"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.3,<0.3",
        "orbax-checkpoint>=0.6,<0.13",
        "tensorstore>=0.1.65,<0.2",
        "seqio>=0.0.19,<0.1",
        "tensorflow-datasets>=4.9,<5",
        "gin-config>=0.5,<0.6",
        "absl-py>=1.4,<3",
        "numpy>=1.26,<3",
        "safetensors>=0.4,<1",
        "ml_dtypes>=0.4,<1",
        "msgpack>=1.0,<2",
        "tensorboard>=2.15,<3",
        "sentencepiece>=0.1.99,<1",
        "tqdm>=4.60,<5",
        # gs:// for every run file (ptjax.files, orbax's epath): honours STORAGE_EMULATOR_HOST.
        "gcsfs>=2024.2,<2027",
        "etils[epath]>=1.5,<2",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "scikit-learn>=1.3,<2",
                 "matplotlib>=3.7,<4",
                 # A Cloud Storage server on 127.0.0.1 for the gs:// tests (tests/cloud/).
                 "gcp-storage-emulator>=2024.8,<2027"],
        # Figures of `python -m ptjax.experiments table`.
        "plots": ["matplotlib>=3.7,<4"],
        # Only for scripts that build fixtures or compare against Hugging Face / PEFT.
        # torch is pinned to the CPU wheel; an unpinned torch pulls GBs of CUDA.
        "compare": ["torch==2.13.0", "transformers>=4.44,<6", "peft>=0.12,<1"],
    },
    entry_points={"console_scripts": ["ptjax-convert=ptjax.convert:run",
                                     "ptjax-extract=ptjax.prompts.extract:run",
                                     "ptjax-plan=ptjax.plan:run"]},
)

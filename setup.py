"""defrcn-ms: DeFRCN few-shot object detection on MindSpore."""
from setuptools import find_packages, setup

# `callbacks/` and `recipes/` are top-level folders in the repository but are
# installed under the package namespace (defrcn.callbacks, defrcn.recipes) so no
# site-package called `callbacks` is created.
library = find_packages(include=["defrcn", "defrcn.*"])
packages = library + ["defrcn.callbacks", "defrcn.recipes", "defrcn.recipes.common"]

setup(
    name="defrcn-ms",
    version="0.1.0",
    description="DeFRCN few-shot object detection as configuration-as-code on MindSpore",
    python_requires=">=3.9,<3.12",
    packages=packages,
    package_dir={
        "defrcn.callbacks": "callbacks",
        "defrcn.recipes": "recipes",
        "defrcn.recipes.common": "recipes/common",
    },
    install_requires=[
        # 2.9 and 2.10 run CPU convolutions ~200x slower on the machines we measured.
        "mindspore==2.8.0",
        "numpy<2",
        "mindcv==0.3.0",
        "pycocotools",
        "tensorboardX",
        "click",
        "Pillow",
        "tqdm",
        # MindSpore's AKG kernel compiler imports it; inference fuses kernels with AKG on CPU
        # (defrcn.utils.device.set_kernel_fusion).
        "decorator",
    ],
    extras_require={"test": ["pytest", "pytest-xdist"]},
)

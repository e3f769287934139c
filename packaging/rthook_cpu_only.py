"""PyInstaller runtime hook of the CPU bundle (the default build): hide CUDA devices from torch.

The CPU bundle leaves out the CUDA libraries that torch only loads on demand (cuDNN's engines, cuSOLVER, torch's
CUDA linear algebra, triton); on a machine with an NVIDIA GPU, torch would still report CUDA and then fail at the
first convolution. Hiding the devices makes "auto" resolve to the CPU. ``FIELDMARK_BUNDLE_CUDA=1 bash
packaging/build.sh`` builds the full bundle without this hook.
"""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
